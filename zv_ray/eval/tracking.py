"""MLflow at the edge for `zv-ray eval`: its own run (linked to the training run), or attached to the training run."""

from __future__ import annotations

from pathlib import Path

from zv_ray.config import RunConfig
from zv_ray.train.tracking import RunLogger, experiment_id, find_run, finish_run, log_params

TRAIN_RUN_TAG = "zv_ray.train_run_id"


def log_evaluation(
    tracking_uri: str,
    cfg: RunConfig,
    *,
    params: dict[str, str],
    metrics: dict[str, float],
    artifacts: list[tuple[Path, str]],  # (local file, artifact folder)
    step: int,
    attach: bool,
) -> str:
    """Log one evaluation and return the MLflow run id it went to.

    Own run: params, metrics at the checkpoint's step, artifacts; tagged with the training run's id when
    that run is found. Attached (--attach): metrics as 'eval/...' at the checkpoint's step, the eval
    params as 'eval.' tags (the training run's params are immutable) and artifacts under eval/step_N/."""
    from mlflow.tracking import MlflowClient

    train_run_id = find_run(tracking_uri, cfg)
    if attach:
        if train_run_id is None:
            raise ValueError(
                f"--attach: no training run named {cfg.cluster.run_name!r} in MLflow experiment {cfg.mlflow.experiment!r} "
                f"at {tracking_uri}; pass the training run's --tracking-uri or evaluate without --attach"
            )
        logger = RunLogger(tracking_uri, train_run_id)
        logger.metrics({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        logger.tags({f"eval.{k}": v for k, v in params.items()})
        for path, folder in artifacts:
            logger.artifact(path, f"eval/step_{step:07d}/{folder}".rstrip("/"))
        return train_run_id

    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {"zv_ray.kind": "eval", **({TRAIN_RUN_TAG: train_run_id} if train_run_id else {})}
    run = client.create_run(
        experiment_id(tracking_uri, cfg.mlflow.experiment), run_name=f"eval-{cfg.cluster.run_name}-step{step}", tags=tags
    )
    run_id = run.info.run_id
    try:
        log_params(tracking_uri, run_id, params)
        logger = RunLogger(tracking_uri, run_id)
        logger.metrics(metrics, step=step)
        for path, folder in artifacts:
            logger.artifact(path, folder or None)
    except Exception:
        finish_run(tracking_uri, run_id, status="FAILED")
        raise
    finish_run(tracking_uri, run_id)
    return run_id
