"""Driver side of training: build the Ray Data streams and the TorchTrainer, track the run in MLflow.

    zv-ray train configs/tiny.yaml                              # local Ray, local MLflow store
    zv-ray train configs/tiny.yaml --resume                     # continue the same run (same storage_path + run_name)
    ray job submit --working-dir . -- zv-ray train configs/gpu.yaml   # on a cluster
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zv_ray.config import ClusterConfig, ConfigError, RunConfig, flatten
from zv_ray.io import storage


log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    run_dir: str  # Ray Train's folder for this run (checkpoints)
    checkpoint: str | None  # latest checkpoint folder
    mlflow_run_id: str
    tracking_uri: str
    metrics: dict[str, Any]
    ply_path: str | None  # local copy of the final Gaussians, when storage is local


def storage_root(cfg: RunConfig) -> str:
    return storage.absolute(cfg.cluster.storage_path)


def check_before_cluster_work(cfg: RunConfig) -> list[dict[str, Any]]:
    """Fail in seconds, not after Ray has started: inconsistent views, bad datasets, a missing init checkpoint.
    Returns the data sources as the actors reach them (pipeline.source_sets: every Parquet footer read once, here)."""
    from zv_ray.config.run import check_training_views
    from zv_ray.pipeline import source_sets

    check_training_views(cfg)
    sources = source_sets(cfg)  # footers and schema: a missing dataset or a corrupt shard is named now
    if cfg.train.eval_objects and not Path(cfg.train.eval_objects).is_dir():
        raise FileNotFoundError(f"train.eval_objects {cfg.train.eval_objects} is not a folder of objects")
    if cfg.train.init_from:
        from zv_ray.model.checkpoint import resolve_checkpoint_file

        resolve_checkpoint_file(cfg.train.init_from)  # local or s3://, read the same way by the workers
    return sources


# What a resumed run may change: how long it runs, where and on what it runs, where it logs.
RESUMABLE_CHANGES = ("train.steps", "train.stop_after", "cluster.", "mlflow.tracking_uri")


def resume_changes(stored: RunConfig, cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, new value)} for a resume; ConfigError when a key outside RESUMABLE_CHANGES differs."""
    old, new = flatten(stored), flatten(cfg)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    refused = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
    if refused:
        listed = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ConfigError(
            f"--resume continues the checkpoint's config, but this config changes {listed}; only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume: undo those edits, or start a new run "
            "(new cluster.run_name, with train.init_from to start from these weights)"
        )
    return changed


def check_environment(cfg: RunConfig, tracking_uri: str, *, phases: list | None = None, timeout_s: float = 600) -> None:
    """The `zv-ray doctor` checks: this node first; then, once Ray is up, whether the work (`phases`, default one
    training run of `cfg`) fits on the cluster, in seconds, before anything waits on resources that never come;
    then every node type the run uses."""
    from zv_ray.cluster.doctor import cluster_checks, node_checks, require, spans_several_nodes
    from zv_ray.cluster.resources import cluster_supply, require_fit, training_phases
    from zv_ray.cluster.session import init_ray, is_local

    require(node_checks(cfg, ("driver",), tracking_uri, storage_root(cfg)))
    init_ray(cfg.cluster)
    require_fit(phases or training_phases(cfg), cluster_supply(local=is_local(cfg.cluster)))
    if spans_several_nodes(cfg):
        require(cluster_checks(cfg, tracking_uri, storage_root(cfg), timeout_s))


def build_trainer(
    cfg: RunConfig,
    *,
    tracking_uri: str,
    mlflow_run_id: str,
    callbacks: list | None = None,
    run_name: str | None = None,
    storage_path: str | None = None,
    sources: list[dict[str, Any]] | None = None,
):
    """A TorchTrainer whose workers each stream their share of every step's samples (zv_ray.train.feed; a
    materialized set is rendered here first, and every worker looks units up in it); `callbacks` (Ray Train
    UserCallbacks, run on its controller) bring its reports to the console's progress display or, in a Tune trial,
    to Tune (TuneReportCallback). `sources`: check_before_cluster_work's, else read here."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from zv_ray.pipeline import materialized_units, source_sets
    from zv_ray.train.loop import train_loop_per_worker

    root = storage_path or storage_root(cfg)
    name = run_name or cfg.cluster.run_name
    # Rank 0 prints its own progress line; Ray Data's bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    sources = sources if sources is not None else source_sets(cfg)
    # Not split: every worker sees every object. The held-out validation objects are rendered by rank 0 itself,
    # under the evaluation protocol (loop.py).
    datasets = {"units": materialized_units(cfg, sources)} if cfg.data.materialize else {}
    resources: dict[str, float] = {"CPU": cfg.cluster.cpus_per_worker}
    if cfg.cluster.worker_resource:
        resources[cfg.cluster.worker_resource] = 1
    local_run_dir = None if storage.is_remote(root) else str(Path(root) / name)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "tracking_uri": tracking_uri,
            "mlflow_run_id": mlflow_run_id,
            "local_run_dir": local_run_dir,
            "sources": sources,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.num_workers, use_gpu=cfg.cluster.use_gpu, resources_per_worker=resources,
            elastic_resize_monitor_interval_s=cfg.cluster.elastic_resize_interval_s,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=root,
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.cluster.num_checkpoints_to_keep),
            callbacks=callbacks or [],
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
    )


def fit_through_storage_outages(make_trainer: Callable[[], Any], cluster: ClusterConfig, run_dir: str):
    """make_trainer().fit(), and again with a new trainer on the same run folder (Ray Train restores the latest
    checkpoint it registered) when Ray Train's controller failed on storage: an S3 outage while it records a
    checkpoint ends the run there, and Ray Train does not retry it (worker failures it does, cluster.max_failures).
    A retry starts only once the run folder reads again (a controller that cannot read its checkpoint record would
    start the run over from step 0); at most cluster.storage_retries tries, cluster.storage_retry_wait_s apart."""
    import ray.train

    from zv_ray.model.checkpoint import RAY_TRAIN_SNAPSHOT

    failure = None
    for attempt in range(cluster.storage_retries + 1):
        if failure is not None:
            log.warning("storage failed under Ray Train (%s); restarting from the last registered checkpoint in %.0f s "
                        "(%d of cluster.storage_retries=%d)", failure, cluster.storage_retry_wait_s, attempt,
                        cluster.storage_retries)
            time.sleep(cluster.storage_retry_wait_s)
            try:
                storage.exists(storage.join(run_dir, RAY_TRAIN_SNAPSHOT))
            except OSError as err:  # still out: wait again
                failure = err
                continue
        try:
            return make_trainer().fit()
        except ray.train.ControllerError as err:
            if not isinstance(err.controller_failure, OSError):
                raise
            failure = err.controller_failure
    raise RuntimeError(f"storage at {run_dir} kept failing through cluster.storage_retries={cluster.storage_retries} "
                       f"restarts, {cluster.storage_retry_wait_s:g} s apart: {failure}")


def run_training(cfg: RunConfig, *, resume: bool = False, console=None) -> TrainingOutcome:
    """Train one run; with a rich `console`, one progress display while it runs (TrainingProgress)."""
    from zv_ray.tracking import fail_run_on_error, finish_run, record_resume_changes, resolve_tracking_uri, start_run

    from zv_ray.config.run import absolute_paths

    cfg = absolute_paths(cfg, Path.cwd())  # the workers run in folders of their own
    sources = check_before_cluster_work(cfg)
    run_dir = storage.join(storage_root(cfg), cfg.cluster.run_name)
    if storage.exists(run_dir) and not resume:
        raise FileExistsError(
            f"run '{cfg.cluster.run_name}' already exists at {run_dir}: pass --resume to continue it, "
            "or set cluster.run_name to a new name"
        )
    changes = {}
    if resume and storage.exists(run_dir):
        from zv_ray.model.checkpoint import checkpoint_config

        try:
            changes = resume_changes(checkpoint_config(run_dir), cfg)
        except FileNotFoundError:
            pass  # stopped before its first checkpoint: Ray Train starts it over with this config
    tracking_uri = resolve_tracking_uri(cfg)
    check_environment(cfg, tracking_uri)
    run_id = start_run(tracking_uri, cfg, resume=resume)
    if changes:
        record_resume_changes(tracking_uri, run_id, changes)
    with fail_run_on_error(tracking_uri, run_id):
        if console is None:
            result = fit_through_storage_outages(
                lambda: build_trainer(cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id, sources=sources),
                cfg.cluster, run_dir)
        else:
            from zv_ray.cluster.resources import pending_demand
            from zv_ray.train.schedule import last_step
            from zv_ray.train.progress import TrainingProgress

            total = last_step(cfg.train)
            # Around build_trainer too: a materialized set renders there, and may wait for resources as well.
            with TrainingProgress(total, console, waiting=pending_demand) as progress:
                result = fit_through_storage_outages(lambda: build_trainer(
                    cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id, callbacks=[progress.relay()], sources=sources),
                    cfg.cluster, run_dir)
    finish_run(tracking_uri, run_id, status="FINISHED")
    ply = storage.join(run_dir, "gaussians.ply")
    return TrainingOutcome(
        run_dir=run_dir,
        # Ray reports a checkpoint by its path inside the filesystem (no scheme): name it under the run folder.
        checkpoint=storage.join(run_dir, storage.name(result.checkpoint.path)) if result.checkpoint else None,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        metrics=dict(result.metrics or {}),
        ply_path=ply if not storage.is_remote(ply) and storage.exists(ply) else None,
    )
