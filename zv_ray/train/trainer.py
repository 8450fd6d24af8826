"""Driver side of training: build the Ray Data streams and the TorchTrainer, track the run in MLflow.

    zv-ray train configs/tiny.yaml                              # local Ray, local MLflow store
    zv-ray train configs/tiny.yaml --resume                     # continue the same run (same storage_path + run_name)
    ray job submit --working-dir . -- zv-ray train configs/gpu.yaml   # on a cluster
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zv_ray.config import RunConfig


@dataclass
class TrainingOutcome:
    run_dir: str  # Ray Train's folder for this run (checkpoints)
    checkpoint: str | None  # latest checkpoint folder
    mlflow_run_id: str
    tracking_uri: str
    metrics: dict[str, Any]
    ply_path: str | None  # local copy of the final Gaussians, when storage is local


def storage_root(cfg: RunConfig) -> str:
    path = cfg.cluster.storage_path
    return path if "://" in path else str(Path(path).resolve())


def check_before_cluster_work(cfg: RunConfig) -> None:
    """Fail in seconds, not after Ray has started: inconsistent views, missing weights, bad datasets."""
    from zv_ray.config.run import check_training_views

    check_training_views(cfg)
    if cfg.loss.perceptual_weight > 0:
        from zv_ray.losses.perceptual import resolve_vgg_weights

        resolve_vgg_weights(cfg.loss.vgg_weights)  # raises LpipsWeightsMissing with the fix
    if cfg.data.source == "parquet" and "://" not in (cfg.data.parquet_path or ""):
        from zv_ray.data.parquet import valid_shards

        if not Path(cfg.data.parquet_path).exists():
            raise FileNotFoundError(f"data.parquet_path {cfg.data.parquet_path} does not exist; write it with `zv-ray dataset`")
        valid_shards(cfg.data.parquet_path, cfg.data.on_corrupt)  # footers and schema: a corrupt shard is named now
    if cfg.train.eval_objects and not Path(cfg.train.eval_objects).is_dir():
        raise FileNotFoundError(f"train.eval_objects {cfg.train.eval_objects} is not a folder of objects")
    if cfg.train.init_from and "://" not in cfg.train.init_from:
        from zv_ray.train.checkpoint import resolve_checkpoint_file

        resolve_checkpoint_file(cfg.train.init_from)


def build_trainer(
    cfg: RunConfig,
    *,
    tracking_uri: str,
    mlflow_run_id: str,
    callbacks: list | None = None,
    run_name: str | None = None,
    storage_path: str | None = None,
):
    """A TorchTrainer fed by the object stream; `callbacks` lets a Tune trial attach TuneReportCallback."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from zv_ray.data.pipeline import object_stream
    from zv_ray.train.loop import train_loop_per_worker

    storage = storage_path or storage_root(cfg)
    name = run_name or cfg.cluster.run_name
    # Rank 0 prints its own progress line; Ray Data's per-epoch bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    train = object_stream(cfg, cfg.data.first_object_id, cfg.data.num_objects)
    datasets = {"train": train.materialize() if cfg.data.materialize else train}
    if cfg.data.num_val_objects:  # held-out ids, always generated (also beside a Parquet training set); rendered once
        online = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "online"})})
        datasets["val"] = object_stream(online, cfg.data.val_first_object_id, cfg.data.num_val_objects).materialize()
    resources: dict[str, float] = {"CPU": cfg.cluster.cpus_per_worker}
    if cfg.cluster.worker_resource:
        resources[cfg.cluster.worker_resource] = 1
    local_run_dir = None if "://" in storage else str(Path(storage) / name)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "tracking_uri": tracking_uri,
            "mlflow_run_id": mlflow_run_id,
            "has_val": "val" in datasets,
            "local_run_dir": local_run_dir,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.cluster.num_workers, use_gpu=cfg.cluster.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.cluster.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.cluster.num_checkpoints_to_keep),
            callbacks=callbacks or [],
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def run_training(cfg: RunConfig, *, resume: bool = False) -> TrainingOutcome:
    from zv_ray.cluster.session import init_ray
    from zv_ray.train.tracking import finish_run, resolve_tracking_uri, start_run

    check_before_cluster_work(cfg)
    storage = storage_root(cfg)
    run_dir = f"{storage.rstrip('/')}/{cfg.cluster.run_name}"
    if "://" not in storage and Path(run_dir).exists() and not resume:
        raise FileExistsError(
            f"run '{cfg.cluster.run_name}' already exists at {run_dir}: pass --resume to continue it, "
            "or set cluster.run_name to a new name"
        )
    tracking_uri = resolve_tracking_uri(cfg)
    run_id = start_run(tracking_uri, cfg, resume=resume)
    init_ray(cfg.cluster)
    try:
        result = build_trainer(cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id).fit()
    except BaseException:
        finish_run(tracking_uri, run_id, status="FAILED")
        raise
    finish_run(tracking_uri, run_id, status="FINISHED")
    ply = Path(run_dir) / "gaussians.ply"
    return TrainingOutcome(
        run_dir=run_dir,
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        metrics=dict(result.metrics or {}),
        ply_path=str(ply) if ply.exists() else None,
    )
