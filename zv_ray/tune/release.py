"""Give back the placement group of a trial that Tune killed (an ASHA early stop).

Tune stops a trial by ending its actor; the Train V2 controller inside dies with it, before it can remove
its worker group's placement group. Ray Train's own PlacementGroupCleaner finds out through the State API,
which needs the dashboard and a single Ray instance on the machine; a local Ray started without the
dashboard (zv_ray.cluster.init_ray) has neither, so the group would hold its CPUs/GPUs until the sweep
ends and later trials would wait for them forever, silently. This watcher needs only the controller handle.
"""

from __future__ import annotations

import time

import ray
from ray.exceptions import RayActorError

# Internal Train V2 hook (the one Train's own cleaner uses); Train passes non-user callbacks through.
from ray.train.v2._internal.execution.callback import WorkerGroupCallback

_POLL_S = 2.0


class ReleasePlacementGroupOnKill(WorkerGroupCallback):
    """Runs in the Train controller: one watcher per started worker group, dismissed on a clean shutdown."""

    def __init__(self) -> None:
        self._watcher = None

    def after_worker_group_start(self, worker_group) -> None:
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        # DEFAULT: outside the Tune trial's placement group, which the controller's children inherit and
        # which Tune removes (killing everything in it) when the trial ends.
        self._watcher = _Watcher.options(scheduling_strategy="DEFAULT").remote()
        self._watcher.watch.remote(ray.get_runtime_context().current_actor, pg)

    def after_worker_group_shutdown(self, worker_group_context) -> None:
        if self._watcher is not None:  # the controller removed the group itself
            ray.kill(self._watcher)
            self._watcher = None

    after_worker_group_abort = after_worker_group_shutdown


@ray.remote(num_cpus=0, lifetime="detached")  # detached: it must outlive the controller it watches
class _Watcher:
    def watch(self, controller, pg) -> None:
        try:
            while True:
                ray.get(controller.__ray_ready__.remote())
                time.sleep(_POLL_S)
        except RayActorError:
            ray.util.remove_placement_group(pg)
        ray.actor.exit_actor()
