"""`zv-ray doctor`: check a node, or every node type of a cluster, against a config before any paid work.

    zv-ray doctor --config configs/tiny.yaml
    RAY_ADDRESS=http://HEAD:8265 zv-ray doctor --config configs/paper.yaml --cluster

Each check is a row: what it found, and the fix when it fails. `zv-ray train` and `sweep` run the same checks
first (the cluster part when the cluster spans several hosts or the config pins work to node types).
"""

from __future__ import annotations

import ipaddress
import platform
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Literal

from zv_ray.cluster.resources import NodeKind, Supply, cluster_supply, fits, fmt_resources, shortfall, training_phases
from zv_ray.config import ConfigError, RunConfig
from zv_ray.io import storage

Role = Literal["driver", "trainer", "render"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    node: str = "driver"


class DoctorFailed(RuntimeError):
    """At least one check failed; the message lists each failure with its fix."""

    def __init__(self, failed: list[Check]):
        self.failed = failed
        super().__init__("; ".join(f"{c.node} {c.name}: {c.detail} -> {c.fix}" for c in failed))


def _guard(name: str, fn) -> Check:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - a check that raises is a failed check, with its message
        return Check(name, False, str(err).splitlines()[0] if str(err) else type(err).__name__, "see the message")


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, platform.python_version(), "" if ok else "zv-ray needs Python 3.11+: use a newer image")


def check_torch(cfg: RunConfig, role: Role) -> Check:
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    detail = f"torch {torch.__version__} ({cuda})"
    if role != "trainer" or not cfg.cluster.use_gpu:
        return Check("torch", True, detail)
    if not torch.cuda.is_available():
        return Check("torch", False, f"{detail}, no CUDA device visible",
                     "cluster.use_gpu is true: install a CUDA torch on GPU nodes, or run with cluster.use_gpu=false")
    return Check("torch", True, f"{detail}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")


def _wants_gsplat(cfg: RunConfig, role: Role) -> bool:
    return role == "trainer" and cfg.cluster.use_gpu and cfg.model.rasterizer != "torch"


def check_cuda_compiler(torch_cuda: str | None, nvcc: str | None) -> Check:
    """The nvcc gsplat's kernels are built with (`nvcc`: its path, None when there is none) against the CUDA
    release torch was built with: the majors must match."""
    from zv_ray.splat.backend import cuda_compiler_problem, nvcc_release, toolkit_fix

    if (problem := cuda_compiler_problem(torch_cuda, nvcc)) is not None:
        return Check("CUDA compiler", False, problem, toolkit_fix(torch_cuda))
    if torch_cuda is None:
        return Check("CUDA compiler", True, "not needed: torch is a CPU build")
    return Check("CUDA compiler", True, f"{nvcc}: CUDA {nvcc_release(nvcc)}, torch built with CUDA {torch_cuda}")


def check_node_cuda_compiler(cfg: RunConfig, role: Role) -> Check:
    if not _wants_gsplat(cfg, role):
        return Check("CUDA compiler", True, "not needed here (CPU, or model.rasterizer=torch)")
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    from zv_ray.splat.backend import find_nvcc

    return check_cuda_compiler(torch.version.cuda, find_nvcc(CUDA_HOME))


def check_gsplat(cfg: RunConfig, role: Role) -> Check:
    from zv_ray.splat.backend import gsplat_problem, gsplat_version

    if not _wants_gsplat(cfg, role):
        return Check("gsplat", True, "not needed here (CPU, or model.rasterizer=torch)")
    if (problem := gsplat_problem()) is not None:  # torch's CUDA and nvcc have rows of their own
        return Check("gsplat", False, problem, "or set model.rasterizer=torch (slow) to train without gsplat")
    from torch.utils.cpp_extension import _get_build_directory

    from pathlib import Path

    built = any(Path(_get_build_directory("gsplat_cuda", verbose=False)).glob("gsplat_cuda*.so"))
    state = "compiled" if built else "not compiled yet (it compiles once, under a lock, at first use)"
    return Check("gsplat", True, f"gsplat {gsplat_version()}, {state}",
                 "" if built else "run `python -m zv_ray.splat.backend` in the node's setup")


def check_gl(cfg: RunConfig) -> Check:
    from zv_ray.render import gl

    backend = gl.resolve_backend(cfg.render.backend)
    renderer = gl.egl_renderer() if backend == "egl" else "OSMesa (software)"
    if renderer is None:
        return Check("GL", False, "EGL selected but no EGL context could be made",
                     "install libegl1 + the GPU driver's EGL vendor file, or set render.backend=osmesa")
    return Check("GL", True, f"{backend}: {renderer}")


def check_vgg(cfg: RunConfig) -> Check:
    if cfg.loss.perceptual_weight <= 0:
        return Check("VGG weights", True, "not needed (loss.perceptual_weight is 0)")
    from zv_ray.losses.perceptual import PerceptualWeightsMissing
    from zv_ray.losses.training_loss import resolve_perceptual_weights

    try:
        return Check("VGG weights", True, f"{cfg.loss.perceptual}: {resolve_perceptual_weights(cfg.loss)}")
    except PerceptualWeightsMissing as err:
        return Check("VGG weights", False, "missing", str(err))


def _is_loopback(uri: str) -> bool:
    host = urllib.parse.urlparse(uri).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_mlflow(tracking_uri: str) -> Check:
    scheme = urllib.parse.urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10) as reply:
                ok = reply.status == 200
        except OSError as err:
            return Check("MLflow", False, f"{tracking_uri} unreachable ({err})",
                         "start the MLflow server, or point mlflow.tracking_uri at one every node reaches")
        return Check("MLflow", ok, f"{tracking_uri} reachable", "" if ok else "the server did not answer /health")
    if scheme == "sqlite":
        folder = tracking_uri.removeprefix("sqlite:///").rsplit("/", 1)[0] or "."
        storage.check_writable(folder)
        return Check("MLflow", True, f"{tracking_uri} (local store: single machine only)")
    return Check("MLflow", True, f"{tracking_uri} (not probed)")


def check_storage(path: str) -> Check:
    try:
        storage.check_writable(path)
    except OSError as err:
        return Check("storage", False, f"{path} is not writable ({str(err).splitlines()[0]})",
                     "create the bucket or folder and grant write access, or change cluster.storage_path")
    return Check("storage", True, f"{path} writable")


def node_checks(cfg: RunConfig, roles: tuple[Role, ...], tracking_uri: str, storage_path: str) -> list[Check]:
    """Everything a node playing `roles` needs for this config, checked on the node itself."""
    role: Role = "trainer" if "trainer" in roles else roles[0]
    checks = [check_python(), _guard("torch", lambda: check_torch(cfg, role))]
    if "trainer" in roles:
        checks.append(_guard("CUDA compiler", lambda: check_node_cuda_compiler(cfg, "trainer")))
        checks.append(_guard("gsplat", lambda: check_gsplat(cfg, "trainer")))
    if "render" in roles:
        checks.append(_guard("GL", lambda: check_gl(cfg)))
    if roles != ("render",):  # the driver and rank 0 (on a trainer node) load weights and log to MLflow
        checks += [_guard("VGG weights", lambda: check_vgg(cfg)), _guard("MLflow", lambda: check_mlflow(tracking_uri))]
    checks.append(_guard("storage", lambda: check_storage(storage_path)))
    return checks


def multi_host_checks(tracking_uri: str, storage_path: str, hosts: set[str]) -> list[Check]:
    """What breaks only once work spans several hosts: a loopback or sqlite MLflow, a local storage path."""
    if len(hosts) <= 1:
        return [Check("hosts", True, f"{len(hosts) or 1} host: local MLflow and storage are fine")]
    checks = []
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri or _is_loopback(tracking_uri):
        checks.append(Check("MLflow (cluster)", False, f"{tracking_uri} is local to one of {len(hosts)} hosts",
                            "run `mlflow server --host 0.0.0.0 ...` on a host every node reaches and set "
                            "mlflow.tracking_uri (or MLFLOW_TRACKING_URI) to it"))
    else:
        checks.append(Check("MLflow (cluster)", True, f"{tracking_uri} is a network address"))
    if not storage.is_remote(storage_path):
        checks.append(Check("storage (cluster)", False, f"{storage_path} is a local folder but the cluster has "
                            f"{len(hosts)} hosts", "set cluster.storage_path to s3://..., gs://... or a shared NFS mount"))
    else:
        checks.append(Check("storage (cluster)", True, f"{storage_path} is shared storage"))
    return checks


def _role_resources(cfg: RunConfig, role: Role) -> dict:
    if role == "trainer":
        custom = {cfg.cluster.worker_resource: 0.001} if cfg.cluster.worker_resource else {}
        return {"num_cpus": 0, "num_gpus": 1 if cfg.cluster.use_gpu else 0, "resources": custom}
    custom = {cfg.data.generator_resource: 0.001} if cfg.data.generator_resource else {}
    return {"num_cpus": 0, "resources": custom}


def _role_bundle(cfg: RunConfig, role: Role) -> dict[str, float]:
    opts = _role_resources(cfg, role)
    return {**opts["resources"], **({"GPU": float(opts["num_gpus"])} if opts.get("num_gpus") else {})}


def resources_check(cfg: RunConfig, supply: Supply) -> Check:
    """Whether a training run of this config can be placed (cluster.resources), as a row."""
    problem = shortfall(training_phases(cfg), supply)
    where = "local Ray" if supply.local else "cluster"
    if problem is None:
        return Check("resources", True, f"a training run fits the {where} ({supply.describe(resources=False)})")
    detail, _, fix = problem.partition("; fix: ")
    return Check("resources", False, detail, fix)


def cluster_checks(cfg: RunConfig, tracking_uri: str, storage_path: str, timeout_s: float,
                   supply: Supply | None = None) -> list[Check]:
    """One task on each node type the config uses (trainer, render), run where Ray schedules that work. A node
    type that neither exists nor can be autoscaled is a failed row at once, not a wait for `timeout_s`."""
    import ray

    def probe(role: Role) -> list[Check]:
        node = f"{role}@{ray.util.get_node_ip_address()}"
        return [Check(c.name, c.ok, c.detail, c.fix, node) for c in node_checks(cfg, (role,), tracking_uri, storage_path)]

    remote = ray.remote(max_retries=0)(probe)
    supply = supply or cluster_supply(local=False)
    checks: list[Check] = []
    roles: list[Role] = []
    for role in ("trainer", "render"):
        bundle = _role_bundle(cfg, role)
        if any(fits(bundle, k.resources) for k in supply.kinds):
            roles.append(role)
        else:
            checks.append(Check("schedule", False, f"no {role} node: no node has {fmt_resources(bundle)}, and no "
                                "autoscaled node type would", f"add nodes with {fmt_resources(bundle)} (cluster.yaml's "
                                "node types), or change the config keys that ask for them", node=role))
    refs = [remote.options(**_role_resources(cfg, role)).remote(role) for role in roles]
    for role, ref in zip(roles, refs):
        try:
            checks += ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            checks.append(Check("schedule", False, f"no {role} node took the check within {timeout_s:.0f} s",
                                f"check that nodes with {_role_resources(cfg, role)} exist or can be autoscaled",
                                node=role))
    hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    return checks + multi_host_checks(tracking_uri, storage_path, hosts)


def spans_several_nodes(cfg: RunConfig) -> bool:
    """After ray.init: the cluster has several nodes, or the config pins work to node types of their own."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return len(alive) > 1 or bool(cfg.cluster.worker_resource or cfg.data.generator_resource)


def run_doctor(cfg: RunConfig, *, cluster: bool, timeout_s: float = 600) -> list[Check]:
    from zv_ray.tracking import resolve_tracking_uri

    storage_path = storage.absolute(cfg.cluster.storage_path)
    try:
        tracking_uri = resolve_tracking_uri(cfg)
    except ConfigError as err:
        return [Check("MLflow", False, "no tracking URI", str(err))] + node_checks(cfg, ("render",), "", storage_path)
    # Alone, this machine is every node: driver, trainer and renderer.
    roles: tuple[Role, ...] = ("driver",) if cluster else ("driver", "trainer", "render")
    checks = node_checks(cfg, roles, tracking_uri, storage_path)
    if cluster:
        from zv_ray.cluster.session import init_ray, is_local

        init_ray(cfg.cluster)
        supply = cluster_supply(local=is_local(cfg.cluster))
        checks += [resources_check(cfg, supply), *cluster_checks(cfg, tracking_uri, storage_path, timeout_s, supply)]
    else:
        checks.append(resources_check(cfg, local_supply(cfg)))
    return checks


def local_supply(cfg: RunConfig) -> Supply:
    """The local Ray that `zv-ray train` would start here (cluster.local_num_cpus logical CPUs, this node's GPUs),
    without starting it. Memory is left unbounded: Ray sizes it from what is free at start."""
    import math

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    node = {"CPU": float(cfg.cluster.local_num_cpus), "memory": math.inf, **({"GPU": float(gpus)} if gpus else {})}
    return Supply([NodeKind("this machine", node, 1)], local=True)


def require(checks: list[Check]) -> None:
    failed = [c for c in checks if not c.ok]
    if failed:
        raise DoctorFailed(failed)


def checks_table(checks: list[Check]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="zv-ray doctor", show_lines=False)
    for column in ("node", "check", "", "found", "fix"):
        table.add_column(column, overflow="fold")
    for c in checks:  # escaped: pip extras such as '.[gpu]' are not markup
        table.add_row(c.node, c.name, "[green]ok[/]" if c.ok else "[bold red]FAIL[/]", escape(c.detail), escape(c.fix))
    return table
