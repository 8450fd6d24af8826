"""Start or join Ray the same way from every entry point."""

from __future__ import annotations

import logging
import os
import sys

from zv_ray.config import ClusterConfig


def is_local(cluster: ClusterConfig) -> bool:
    """True when init_ray starts a Ray of its own (sized by cluster.local_num_cpus) instead of joining one."""
    return not (cluster.ray_address or os.environ.get("RAY_ADDRESS"))


def init_ray(cluster: ClusterConfig) -> None:
    """Join the cluster named by config or $RAY_ADDRESS (as under `ray job submit`), else start a local one.

    A local Ray declares more logical CPUs than cores (cluster.local_num_cpus): on 2 cores, train workers
    otherwise hold every CPU and the data actors never start (a silent hang).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = None if is_local(cluster) else cluster.ray_address or os.environ["RAY_ADDRESS"]
    # Forwarded so every worker sees them: GL platform choice and the failure-drill hooks (trainer and render actor).
    forwarded = ("ZV_RAY_GL", "PYOPENGL_PLATFORM", "TORCH_HOME", "ZV_RAY_FAULT_AT_STEP", "ZV_RAY_FAULT_MARKER", "ZV_RAY_FAULT_KIND",
                 "ZV_RAY_RENDER_FAULT_ARMED")
    # Storage and tracking credentials the driver was given reach the workers too (S3-compatible endpoints included).
    forwarded += tuple(k for k in os.environ if k.startswith(("AWS_", "GOOGLE_", "MLFLOW_")))
    env_vars = {
        "RAY_USAGE_STATS_ENABLED": "0",
        # glibc: keep large tensors out of mmap/trim churn; CPU steps run ~20% faster (benchmarks/model.py).
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
        **{k: os.environ[k] for k in forwarded if k in os.environ},
    }
    runtime_env = {"env_vars": env_vars}
    # Quiet by default: worker output and Ray's library logs stay in the session's log folder (ray_log_folder()).
    quiet = {"log_to_driver": cluster.verbose, "configure_logging": True,
             "logging_level": "INFO" if cluster.verbose else "ERROR",
             "logging_config": ray.LoggingConfig(log_level="INFO" if cluster.verbose else "WARNING")}
    if not cluster.verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
        import ray.data  # noqa: F401 - it configures its loggers on import: quiet them after that

        for name in ("ray", "ray.data", "ray.train", "ray.tune", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if address:
        # Under `ray job submit` the job's runtime env (runtime_env.yaml) also sets env vars: merge, don't fail.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cluster.local_num_cpus, include_dashboard=False, runtime_env=runtime_env, **quiet)
    if not cluster.verbose:
        _native_stderr_to(os.path.join(ray_log_folder(), "driver-native-stderr.log"))


def _native_stderr_to(path: str) -> None:
    """Point file descriptor 2 at `path`, keeping Python's sys.stderr on the terminal. Ray's C++ core worker
    writes some errors straight to fd 2 (every Ray Data actor pool prints issue 53727's 'constructor arguments
    in the object store' line, which no log level silences without a line of its own)."""
    if not os.path.isdir(os.path.dirname(path)):
        return
    terminal = os.dup(2)
    sys.stderr.flush()
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8")


def ray_log_folder() -> str:
    """Where this Ray session keeps every worker's output and Ray's own logs."""
    import ray

    node = ray._private.worker._global_node  # no public API names the session folder
    return os.path.join(node.get_session_dir_path(), "logs") if node is not None else "(see `ray logs`)"
