"""Will a config's work fit on the cluster? Asked before any work starts, so a run that cannot be placed fails in
seconds with one line instead of waiting forever for resources that do not exist.

    phases = training_phases(cfg)              # what each stage of a run holds at the same time
    require_fit(phases, cluster_supply())      # InsufficientResources naming the resource, need, have and fix

Demand: groups of identical Ray requests (train workers, generator actors, ...) held together during a phase
(a materialized set is rendered first, then trained on: two phases). Supply: every alive node, grouped by its
resources, plus what the autoscaler may still add. Placement is first-fit-decreasing bin packing per phase, the
way Ray's scheduler places each bundle on one node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Imported here, not inside the functions: the preflight runs right after ray.init, and under `ray job submit` on a
# multi-node host Ray is still unpacking the job's working_dir then (eager install), so a lazy import of the
# working_dir's modules can find files missing.
from zv_ray.pipeline import IO_NUM_CPUS, generator_memory_bytes, generator_pool_size

if TYPE_CHECKING:
    from zv_ray.config import RunConfig
    from zv_ray.config.sweep import SweepConfig

# Ray's bookkeeping resources: never requested by zv-ray, not a node's capacity in any useful sense.
_IGNORED_PREFIXES = ("node:", "object_store_memory", "accelerator_type:")
# What each Tune trial's own function holds (it only builds and waits on its TorchTrainer).
TUNE_TRIAL_CPUS = 0.01
# A node type the autoscaler may add without a limit still gets a finite count in the packing.
_UNBOUNDED = 10_000


class InsufficientResources(RuntimeError):
    """The config's work cannot be placed on this cluster, even after autoscaling; the message says what to change."""


@dataclass(frozen=True)
class Group:
    """`count` identical Ray requests of `bundle` (e.g. 4 train workers of {CPU: 8, GPU: 1, trainer: 1})."""

    what: str
    count: int
    bundle: dict[str, float]
    count_key: str  # the config key that sets how many (`count` = its value x `per`), suggested in the fix
    size_keys: str = ""  # the config keys that size one request, named in the fix
    per: int = 1

    @property
    def knobs(self) -> str:
        return ", ".join(k for k in (self.count_key, self.size_keys) if k)

    def total(self, resource: str) -> float:
        return self.count * self.bundle.get(resource, 0.0)


@dataclass(frozen=True)
class NodeKind:
    """Nodes with the same resources: `count` alive now, `can_add` more that the autoscaler may start."""

    name: str
    resources: dict[str, float]
    count: int
    can_add: int = 0


@dataclass(frozen=True)
class Supply:
    kinds: list[NodeKind]
    local: bool  # a local Ray this process started (its size is cluster.local_num_cpus)

    def capacity(self, resource: str) -> float:
        return sum(k.resources.get(resource, 0.0) * (k.count + k.can_add) for k in self.kinds)

    def describe(self, *, resources: bool = True) -> str:
        """'1+8 x train_gpu (autoscaled) {CPU: 96, ...}, ...': alive count, + what autoscaling may add."""
        return ", ".join(f"{k.count}{'+' + str(k.can_add) if k.can_add else ''} x {k.name}"
                         + (f" {fmt_resources(k.resources)}" if resources else "") for k in self.kinds) or "no nodes"

    @property
    def autoscales(self) -> bool:
        return any(k.can_add for k in self.kinds)


# --- demand -------------------------------------------------------------------------------------------------


def worker_group(cfg: RunConfig) -> Group:
    c = cfg.cluster
    bundle = {"CPU": c.cpus_per_worker}
    if c.use_gpu:
        bundle["GPU"] = 1.0
    if c.worker_resource:
        bundle[c.worker_resource] = 1.0
    # An elastic run starts once its minimum fits (and grows as more does).
    return Group("train workers", c.worker_range[0], bundle, "cluster.num_workers", "cluster.cpus_per_worker")


def generator_group(cfg: RunConfig, output: str, count: int | None = None) -> Group:
    d = cfg.data
    bundle = {"CPU": d.generator_num_cpus, "memory": float(generator_memory_bytes(cfg, output))}
    if d.generator_num_gpus:
        bundle["GPU"] = d.generator_num_gpus
    if d.generator_resource:
        bundle[d.generator_resource] = 1.0
    return Group("generator actors", count or d.num_generator_actors, bundle, "data.num_generator_actors",
                 "data.generator_num_cpus, data.generator_memory_mb")


def training_phases(cfg: RunConfig) -> list[list[Group]]:
    """What one training run holds at once, phase by phase. Streamed: the train workers and each one's share of the
    generator actors (which render or read every source's units) together. Materialized: the actors render the set
    and go, then the workers train."""
    workers = worker_group(cfg)
    if cfg.data.materialize:
        return [[generator_group(cfg, "samples")], [workers]]
    shared = generator_pool_size(cfg, workers.count) * workers.count
    return [[workers, generator_group(cfg, "samples", shared)]]


def dataset_phases(cfg: RunConfig, listing: bool = False) -> list[list[Group]]:
    """`zv-ray dataset`: the generator actors (or import tasks, sized alike) plus one shard writer task
    (pipeline.IO_NUM_CPUS), and one mesh listing task for `--meshes` (`listing`)."""
    tasks = [Group("shard writer tasks", 1, {"CPU": IO_NUM_CPUS}, "")]
    tasks += [Group("mesh listing tasks", 1, {"CPU": IO_NUM_CPUS}, "")] if listing else []
    return [[generator_group(cfg, "record"), *tasks]]


def sweep_phases(sweep: SweepConfig, configs: list[RunConfig]) -> list[list[Group]]:
    """`max_concurrent_trials` trials in the same phase at once (the worst case: trials that each hold part of
    what they need could otherwise wait on each other forever), for every trial config of the space."""
    trials = sweep.max_concurrent_trials
    drivers = Group("Tune trial functions", trials, {"CPU": TUNE_TRIAL_CPUS}, "max_concurrent_trials")
    out = []
    for cfg in configs:
        for phase in training_phases(cfg):
            out.append([drivers, *(Group(f"{g.what} of {trials} concurrent trials", g.count * trials, g.bundle,
                                         "max_concurrent_trials", g.knobs, per=g.count) for g in phase)])
    return _unique(out)


def _unique(phases: list[list[Group]]) -> list[list[Group]]:
    seen, out = set(), []
    for phase in phases:
        key = repr(phase)
        if key not in seen:
            seen.add(key)
            out.append(phase)
    return out


# --- supply -------------------------------------------------------------------------------------------------


def _capacity(resources: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if not k.startswith(_IGNORED_PREFIXES) and float(v) > 0}


def node_kind_name(resources: dict[str, float], *, head: bool = False) -> str:
    custom = sorted(k for k in resources if k not in ("CPU", "GPU", "memory"))
    name = "+".join(custom) if custom else ("GPU node" if resources.get("GPU") else "CPU node")
    return f"head ({name})" if head and custom else ("head" if head else name)


def group_nodes(nodes: Iterable[dict[str, Any]]) -> list[NodeKind]:
    """ray.nodes() entries (alive ones) -> kinds of identical resources. Memory is rounded to GiB so that nodes
    of one instance type group together."""
    kinds: dict[tuple, NodeKind] = {}
    for node in nodes:
        if not node.get("Alive"):
            continue
        raw = node.get("Resources", {})
        res = _capacity(raw)
        head = "node:__internal_head__" in raw
        key = (head, tuple(sorted((k, round(v / 2**30) if k == "memory" else v) for k, v in res.items())))
        if key in kinds:
            k = kinds[key]
            kinds[key] = NodeKind(k.name, k.resources, k.count + 1)
        else:
            kinds[key] = NodeKind(node_kind_name(res, head=head), res, 1)
    return list(kinds.values())


def add_autoscaling(kinds: list[NodeKind], node_types: Iterable[tuple[str, dict[str, float], int]]) -> list[NodeKind]:
    """Add what an autoscaler may still start: (name, resources, max_count; -1 unbounded) per node type. A node
    type's alive nodes (same resources) count against its max. Node types that omit memory get none: the
    autoscaler fills it in at launch, and zv-ray's memory asks are far below any cloud node's."""
    out = list(kinds)
    for name, resources, max_count in node_types:
        res = _capacity(resources)
        if not res:
            continue
        alive = sum(k.count for k in kinds if _same_node_type(k.resources, res))
        room = _UNBOUNDED if max_count < 0 else max(0, max_count - alive)
        if room:
            out.append(NodeKind(f"{name} (autoscaled)", {"memory": math.inf, **res}, 0, room))
    return out


def _same_node_type(alive: dict[str, float], declared: dict[str, float]) -> bool:
    return all(alive.get(k) == v for k, v in declared.items() if k != "memory")


def bootstrap_node_types(config: dict[str, Any]) -> list[tuple[str, dict[str, float], int]]:
    """A Ray cluster launcher YAML (cluster.yaml, ~/ray_bootstrap_config.yaml on a `ray up` head) -> node types
    with their resources and max_workers (the cluster-wide max_workers caps each)."""
    cap = int(config.get("max_workers", _UNBOUNDED))
    head = config.get("head_node_type")
    out = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        out.append((name, dict(spec.get("resources") or {}), min(int(spec.get("max_workers", cap)), cap)))
    return out


def autoscaler_node_types() -> list[tuple[str, dict[str, float], int]]:
    """Node types the running autoscaler may add: the config it reported to Ray's GCS (autoscaler v2, KubeRay),
    else the launcher config on a `ray up` head. Empty when nothing autoscales."""
    import os

    import yaml

    try:
        from ray._private.state import state  # Ray Data's own autoscaling check reads it the same way

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a Ray without it: fall back to the launcher file
        config = None
    if config is not None and config.node_group_configs:
        return [(g.name, dict(g.resources), int(g.max_count)) for g in config.node_group_configs]
    path = os.path.expanduser("~/ray_bootstrap_config.yaml")
    if os.path.isfile(path):
        with open(path) as f:
            return bootstrap_node_types(yaml.safe_load(f) or {})
    return []


def cluster_supply(*, local: bool) -> Supply:
    """After ray.init: every alive node, and what autoscaling may add."""
    import ray

    kinds = group_nodes(ray.nodes())
    if not local:
        kinds = add_autoscaling(kinds, autoscaler_node_types())
    return Supply(kinds, local)


# --- placement ----------------------------------------------------------------------------------------------


def fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v - 1e-9 for k, v in bundle.items() if v > 0)


def _pack(phase: list[Group], supply: Supply) -> Group | None:
    """First-fit decreasing; the group whose request found no node, or None when everything fits."""
    requests = [(g, g.bundle) for g in phase for _ in range(g.count)]
    nodes = [dict(k.resources) for k in supply.kinds for _ in range(k.count + min(k.can_add, len(requests)))]
    requests.sort(key=lambda r: tuple(-r[1].get(k, 0.0) for k in ("GPU", "CPU", "memory")))
    for group, bundle in requests:
        node = next((n for n in nodes if fits(bundle, n)), None)
        if node is None:
            return group
        for k, v in bundle.items():
            node[k] = node.get(k, 0.0) - v
    return None


def fmt_amount(resource: str, value: float) -> str:
    if resource == "memory":
        return "unbounded" if math.isinf(value) else f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


def fmt_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {fmt_amount(k, v)}" for k, v in sorted(resources.items())) + "}"


def _setting(key: str, value: int) -> str:
    # Sweep-level keys live in the sweep file; run-config keys take --set.
    return f"{key}: {value} in the sweep file" if "." not in key else f"--set {key}={value}"


def _fix(resource: str, group: Group, supply: Supply, need: float, room: float | None = None) -> str:
    """The change that makes `group` fit: with `room` (what is left for it of `resource`), the largest count."""
    fits = int((room + 1e-9) // group.bundle[resource]) // group.per if room is not None and group.bundle.get(resource) else 0
    lower = _setting(group.count_key, fits) if fits >= 1 and group.count_key else f"lower {group.knobs}"
    if supply.local and resource == "CPU":
        return f"{lower}, or --set cluster.local_num_cpus={math.ceil(need)}"
    if resource == "CPU":
        return f"{lower}, or give Ray more CPUs (`ray start --num-cpus=...`, more nodes)"
    if resource == "GPU":
        return "add GPU nodes, or --set cluster.use_gpu=false (and data.generator_num_gpus=0)"
    if resource == "memory":
        return f"{lower}, or use nodes with more memory"
    return (f"start nodes with `ray start --resources='{{\"{resource}\": N}}'` (cluster.yaml's node types have it), "
            f"or unset the config key that asks for '{resource}'")


def shortfall(phases: list[list[Group]], supply: Supply) -> str | None:
    """None when every phase can be placed; else one line: the resource, what is needed, what exists, the fix."""
    where = "local Ray" if supply.local else "the cluster" + (" even with autoscaling" if supply.autoscales else "")
    kinds = supply.describe()
    for phase in phases:
        for group in phase:
            if not any(fits(group.bundle, k.resources) for k in supply.kinds):
                lacking = [r for r, v in group.bundle.items() if not any(k.resources.get(r, 0.0) >= v for k in supply.kinds)]
                # A resource no node has at all (a GPU, a node type's custom resource) is the real news.
                missing = min(lacking, key=lambda r: supply.capacity(r) > 0)
                return (f"no node of {where} can hold one of the {group.what} {fmt_resources(group.bundle)}: "
                        f"no node has {missing} {fmt_amount(missing, group.bundle[missing])} (nodes: {kinds}); "
                        f"fix: {_fix(missing, group, supply, group.bundle[missing])}")
        resources = sorted({r for g in phase for r in g.bundle})
        for resource in resources:
            need = sum(g.total(resource) for g in phase)
            have = supply.capacity(resource)
            if need > have + 1e-9:
                biggest = max(phase, key=lambda g: g.total(resource))
                parts = " + ".join(f"{g.count} {g.what} x {fmt_amount(resource, g.bundle.get(resource, 0))}"
                                   for g in phase if g.total(resource))
                room = have - (need - biggest.total(resource))
                return (f"this config needs {fmt_amount(resource, need)} {resource} at once ({parts}) but {where} "
                        f"has {fmt_amount(resource, have)}; fix: {_fix(resource, biggest, supply, need, room)}")
        if (group := _pack(phase, supply)) is not None:
            return (f"the {group.what} {fmt_resources(group.bundle)} do not fit on the nodes of {where} beside the "
                    f"rest of their phase (nodes: {kinds}); fix: lower {group.knobs}, or add nodes")
    return None


def require_fit(phases: list[list[Group]], supply: Supply) -> None:
    if (problem := shortfall(phases, supply)) is not None:
        raise InsufficientResources(problem)


def pending_demand() -> str | None:
    """What Ray cannot place right now, for any job ('need {CPU: 1} x 1, free {CPU: 0}'), or None. The
    autoscaler's own view (the `ray status` "Pending Demands"), so it names our waits and other jobs' alike."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status

    demands = get_cluster_status(ray.get_runtime_context().gcs_address).resource_demands
    asks: dict[str, int] = {}
    asked: set[str] = set()
    for demand in [*demands.ray_task_actor_demand, *demands.placement_group_demand]:
        for request in demand.bundles_by_count:
            bundle = {k: v for k, v in request.bundle.items() if not k.startswith(_IGNORED_PREFIXES)}
            asked |= set(bundle)
            asks[fmt_resources(bundle)] = asks.get(fmt_resources(bundle), 0) + request.count
    if not asks:
        return None
    free = _capacity(ray.available_resources())  # a resource with nothing free is absent from it
    shown = {r: free.get(r, 0.0) for r in asked}
    return "need " + ", ".join(f"{b} x {n}" for b, n in asks.items()) + f"; free {fmt_resources(shown)}"
