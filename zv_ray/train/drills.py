"""Opt-in checks for failure drills, built once so an ordinary run pays nothing per step.

    ZV_RAY_FAULT_AT_STEP=12 ZV_RAY_FAULT_MARKER=/tmp/fault-once zv-ray train configs/tiny.yaml
    ZV_RAY_FAULT_KIND=sigkill ...      # the worker process is killed outright, as an OOM kill or a lost node would
    --set train.audit_consumed_ids=true   # <run>/consumed_ids/rank<r>.json: the ids each worker trained on

The marker file makes the fault fire once per drill, so the restarted run gets past that step.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from zv_ray.io.atomic import atomic_path

class InjectedFault(RuntimeError):
    pass


@dataclass(frozen=True)
class FaultDrill:
    """Rank 0 raises (or SIGKILLs itself) once, at `at_step`, unless `marker` says it already did."""

    at_step: int
    marker: Path
    sigkill: bool

    @classmethod
    def from_env(cls, rank: int) -> "FaultDrill | None":
        at, marker = os.environ.get("ZV_RAY_FAULT_AT_STEP"), os.environ.get("ZV_RAY_FAULT_MARKER")
        if at is None or marker is None or rank != 0:
            return None
        return cls(int(at), Path(marker), os.environ.get("ZV_RAY_FAULT_KIND") == "sigkill")

    def before_step(self, step: int) -> None:
        if step != self.at_step or self.marker.exists():
            return
        self.marker.write_text(f"fault injected at step {step}\n")
        if self.sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault at step {step} (ZV_RAY_FAULT_AT_STEP)")


@dataclass
class IdAudit:
    """The object ids this worker trained on since it (re)started, written when its loop ends."""

    path: Path
    ids: list[int] = field(default_factory=list)

    @classmethod
    def for_run(cls, enabled: bool, local_run_dir: str | None, rank: int) -> "IdAudit | None":
        return cls(Path(local_run_dir) / "consumed_ids" / f"rank{rank}.json") if enabled and local_run_dir else None

    def record(self, object_ids) -> None:
        self.ids += object_ids.tolist()

    def write(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.ids))
