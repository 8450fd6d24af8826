"""MLflow at the edge: one run per training run, the flattened config as params, metrics per step.

The driver creates (or, on resume, finds) the run and hands its id to the workers; rank 0 logs to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from zv_ray.config import RunConfig, flatten

RUN_NAME_TAG = "zv_ray.run_name"


def resolve_tracking_uri(cfg: RunConfig) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then a sqlite file beside the runs (local storage only)."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if "://" in cfg.cluster.storage_path:
        raise ValueError(
            f"cluster.storage_path {cfg.cluster.storage_path} is remote: set mlflow.tracking_uri "
            "(or MLFLOW_TRACKING_URI) to a shared MLflow server"
        )
    root = Path(cfg.cluster.storage_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str) -> str:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def find_run(tracking_uri: str, cfg: RunConfig) -> str | None:
    """The newest run of this experiment tagged with this run name, if any."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{cfg.cluster.run_name}'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def start_run(tracking_uri: str, cfg: RunConfig, *, resume: bool, tags: dict[str, str] | None = None) -> str:
    """Create the MLflow run for this training run (or reuse it on resume) and log the config once."""
    if resume and (run_id := find_run(tracking_uri, cfg)):
        _client(tracking_uri).set_terminated(run_id, status="RUNNING")
        return run_id
    client = _client(tracking_uri)
    run = client.create_run(
        experiment_id(tracking_uri, cfg.mlflow.experiment),
        run_name=cfg.cluster.run_name,
        tags={RUN_NAME_TAG: cfg.cluster.run_name, **(tags or {})},
    )
    log_params(tracking_uri, run.info.run_id, flatten(cfg))
    return run.info.run_id


def log_params(tracking_uri: str, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    client = _client(tracking_uri)
    for i in range(0, len(items), 100):  # MLflow caps params per batch at 100
        client.log_batch(run_id, params=items[i : i + 100])


class RunLogger:
    """Thin wrapper used by rank 0 inside the workers."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = _client(tracking_uri)
        self.run_id = run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and np.isfinite(v)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def image(self, image: np.ndarray, artifact_file: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def tags(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, v)


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)
