"""Start or join Ray the same way from every entry point."""

from __future__ import annotations

import os

from zv_ray.config import ClusterConfig


def init_ray(cluster: ClusterConfig) -> None:
    """Join the cluster named by config or $RAY_ADDRESS (as under `ray job submit`), else start a local one.

    A local Ray declares more logical CPUs than cores (cluster.local_num_cpus): on 2 cores, train workers
    otherwise hold every CPU and the data actors never start (a silent hang).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cluster.ray_address or os.environ.get("RAY_ADDRESS")
    # Forwarded so every worker sees them: GL platform choice and the failure-drill hook.
    forwarded = ("ZV_RAY_GL", "PYOPENGL_PLATFORM", "ZV_RAY_FAULT_AT_STEP", "ZV_RAY_FAULT_MARKER", "TORCH_HOME")
    env_vars = {
        "RAY_USAGE_STATS_ENABLED": "0",
        # glibc: keep large tensors out of mmap/trim churn; CPU steps run ~20% faster (benchmarks/model.py).
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
        **{k: os.environ[k] for k in forwarded if k in os.environ},
    }
    runtime_env = {"env_vars": env_vars}
    if address:
        # Under `ray job submit` the job's runtime env (runtime_env.yaml) also sets env vars: merge, don't fail.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=cluster.local_num_cpus,
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=True,
        configure_logging=True,
        logging_level="WARNING",
    )
