"""MLflow at the edge: every MLflow call and tag of zv-ray lives here.

- Training: the driver creates (or, on resume, finds) one run per training run, logs the flattened config once as
  params, and hands the run id to the workers; rank 0 logs metrics, images, system metrics and artifacts to it.
- Evaluation (`zv-ray eval`): its own run, linked to the training run, or attached to it (--attach).
- Sweeps: one parent run, one child run per trial, found by the SWEEP_* tags below.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from zv_ray.config import ConfigError, RunConfig, flatten
from zv_ray.io import storage

RUN_NAME_TAG = "zv_ray.run_name"
TRAIN_RUN_TAG = "zv_ray.train_run_id"  # on an eval run: the training run it scored
# Sweeps: one parent run, one child run per trial, found by these tags.
SWEEP_TAG = "zv_ray.sweep"
ROLE_TAG = "zv_ray.sweep.role"  # "parent" or "trial"
TRIAL_TAG = "zv_ray.sweep.trial_id"
OUTCOME_TAG = "zv_ray.sweep.outcome"  # completed | stopped (by the scheduler) | diverged | failed | interrupted
SPACE_TAG = "zv_ray.sweep.space"  # comma-separated space keys, on the parent
METRIC_TAG = "zv_ray.sweep.metric"
MODE_TAG = "zv_ray.sweep.mode"
REFERENCE_TAG = "zv_ray.sweep.reference"  # on the parent: the reference arm's label (zv_ray.config.sweep.arm_label)
SEED_TAG = "zv_ray.sweep.seed"  # on a trial: the seed it ran with
DIVERGED_TAG = "diverged"  # yes/no, set by the training loop on every run
PARAM_PREFIX = "sweep."  # child-run params holding the sampled values (bundle labels included)
DONE_OUTCOMES = ("completed", "stopped", "diverged")


def resolve_tracking_uri(cfg: RunConfig) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then a sqlite file beside the runs (local storage only)."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if storage.is_remote(cfg.cluster.storage_path):
        raise ConfigError(
            f"cluster.storage_path {cfg.cluster.storage_path} is remote: set mlflow.tracking_uri "
            "(or MLFLOW_TRACKING_URI) to a shared MLflow server"
        )
    root = Path(cfg.cluster.storage_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# MLflow 3's UI opens an experiment on its training view (not the GenAI "Evaluation runs" one) with this kind.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(tracking_uri: str, name: str) -> str:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    if exp.tags.get("mlflow.experimentKind") is None:
        client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    return exp.experiment_id


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


def record_resume_changes(tracking_uri: str, run_id: str, changes: dict[str, tuple[Any, Any]]) -> None:
    """MLflow params are immutable: a resume's allowed changes go into a tag and a JSON artifact instead."""
    client = _client(tracking_uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    client.set_tag(run_id, "zv_ray.resume_changes", ", ".join(f"{k}={new}" for k, (_, new) in changes.items())[:5000])
    client.log_dict(run_id, {k: {"was": old, "now": new} for k, (old, new) in changes.items()}, f"resumes/{stamp}.json")


def log_params(tracking_uri: str, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    client = _client(tracking_uri)
    for i in range(0, len(items), 100):  # MLflow caps params per batch at 100
        client.log_batch(run_id, params=items[i : i + 100])


class RunLogger:
    """Rank 0's logger inside the workers. Every call is queued and sent in order by a background thread, which keeps
    retrying an item while the tracking server is unreachable (an MLflow server restart, a network blip): training
    never waits on MLflow. On recovery it logs `system/tracking_outage_s`; what is still unsent when `close` gives up
    is counted in the `zv_ray.unsent_log_items` tag and a warning, never an exception. With system_metrics_every_s it
    also samples the node's CPU, memory, disk, network and (with nvidia-ml-py) GPU into `system/*` metrics,
    continuing their step count across restarts."""

    RETRY_EVERY_S = 2.0

    def __init__(self, tracking_uri: str, run_id: str, *, system_metrics_every_s: float | None = None):
        import queue
        import tempfile
        import threading

        self.client = _client(tracking_uri)
        self.run_id = run_id
        self.unsent = 0
        self._queue: queue.Queue = queue.Queue()
        self._files = tempfile.TemporaryDirectory(prefix="zv-ray-artifacts-")  # artifacts outlive their caller's folder
        self._last_step = 0
        self._sender = threading.Thread(target=self._send_forever, name="mlflow-sender", daemon=True)
        self._sender.start()
        self.system = None
        if system_metrics_every_s:
            import socket

            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.system = SystemMetricsMonitor(run_id, sampling_interval=system_metrics_every_s, resume_logging=True,
                                               node_id=socket.gethostname(), tracking_uri=tracking_uri)
            self.system.start()

    def _send_forever(self) -> None:
        import logging

        while (item := self._queue.get()) is not None:
            down_since = None
            while True:
                try:
                    item()
                    break
                except Exception as err:  # noqa: BLE001 - any failure to reach the server: retry the same item
                    if down_since is None:
                        down_since = time.monotonic()
                        logging.getLogger(__name__).warning("MLflow unreachable, retrying: %s", err)
                    time.sleep(self.RETRY_EVERY_S)
            if down_since is not None:  # queued like any item, so a failure to send it is retried too
                outage, step = time.monotonic() - down_since, self._last_step
                self._queue.put(lambda: self.client.log_metric(self.run_id, "system/tracking_outage_s", outage, step=step))
            self._queue.task_done()

    def close(self, flush_timeout_s: float = 120.0) -> None:
        """Stop the system metrics, send what is queued (for at most flush_timeout_s), then stop the sender."""
        import logging

        if self.system is not None:
            self.system.finish()
        deadline = time.monotonic() + flush_timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        self.unsent = self._queue.unfinished_tasks
        if self.unsent:
            logging.getLogger(__name__).warning("MLflow: %d log items unsent after %.0f s", self.unsent, flush_timeout_s)
            try:
                self.client.set_tag(self.run_id, "zv_ray.unsent_log_items", str(self.unsent))
            except Exception:  # noqa: BLE001 - still unreachable: the warning above is the record
                pass
        else:
            self._queue.put(None)
            self._sender.join(10)
        self._files.cleanup()

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._last_step = step
        batch = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and np.isfinite(v)]
        if batch:
            self._queue.put(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import shutil
        import uuid

        kept = Path(self._files.name) / uuid.uuid4().hex / Path(path).name
        kept.parent.mkdir()
        shutil.copy2(path, kept)
        self._queue.put(lambda: self.client.log_artifact(self.run_id, str(kept), artifact_path))

    def image(self, image: np.ndarray, artifact_file: str) -> None:
        self._queue.put(lambda: self.client.log_image(self.run_id, image, artifact_file=artifact_file))

    def tags(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self._queue.put(lambda k=k, v=v: self.client.set_tag(self.run_id, k, v))


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)


@contextmanager
def fail_run_on_error(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Ends the run FAILED when the body raises (Ctrl-C included) and re-raises; on success the caller picks the
    terminal status, which may depend on what the body did."""
    try:
        yield
    except BaseException:
        finish_run(tracking_uri, run_id, status="FAILED")
        raise


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run."""
    return dict(_client(tracking_uri).get_run(run_id).data.metrics)


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged point of one metric, by step."""
    return sorted((m.step, m.value) for m in _client(tracking_uri).get_metric_history(run_id, key))


def log_dict(tracking_uri: str, run_id: str, data: dict, artifact_file: str) -> None:
    _client(tracking_uri).log_dict(run_id, data, artifact_file)


def log_artifact(tracking_uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    _client(tracking_uri).log_artifact(run_id, str(path), artifact_path)


def download_artifact(tracking_uri: str, run_id: str, artifact_path: str, dst: Path) -> Path | None:
    """A local copy of one artifact under dst, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # else a bar per download on the console
    try:
        return Path(_client(tracking_uri).download_artifacts(run_id, artifact_path, str(dst)))
    except (OSError, MlflowException):
        return None


# Evaluation runs.
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
        logger.close()  # sent before the command returns
        return train_run_id

    tags = {"zv_ray.kind": "eval", **({TRAIN_RUN_TAG: train_run_id} if train_run_id else {})}
    run = _client(tracking_uri).create_run(
        experiment_id(tracking_uri, cfg.mlflow.experiment), run_name=f"eval-{cfg.cluster.run_name}-step{step}", tags=tags
    )
    run_id = run.info.run_id
    with fail_run_on_error(tracking_uri, run_id):
        log_params(tracking_uri, run_id, params)
        logger = RunLogger(tracking_uri, run_id)
        logger.metrics(metrics, step=step)
        for path, folder in artifacts:
            logger.artifact(path, folder or None)
        logger.close()
    finish_run(tracking_uri, run_id)
    return run_id


# Sweep runs.
def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str | None = None) -> list:
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    if trial_id:
        query += f" and tags.`{TRIAL_TAG}` = '{trial_id}'"
    return _client(tracking_uri).search_runs([experiment_id], filter_string=query, max_results=10_000)


def end_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, *, status: str,
                  outcome: str, diverged: bool) -> None:
    """Tag a trial's run with its outcome and whether it diverged, and give it a terminal status."""
    client = _client(tracking_uri)
    for run in child_runs(tracking_uri, experiment_id, parent_run_id, trial_id):
        client.set_tag(run.info.run_id, OUTCOME_TAG, outcome)
        client.set_tag(run.info.run_id, DIVERGED_TAG, "yes" if diverged else "no")
        client.set_terminated(run.info.run_id, status=status)


def sweep_parent(tracking_uri: str, ref: str):
    """A parent run by its id, or the newest parent run of a sweep with that name."""
    client = _client(tracking_uri)
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        run = client.get_run(ref)
        if run.data.tags.get(ROLE_TAG) != "parent":
            raise LookupError(f"run {ref} is not a sweep's parent run (no {ROLE_TAG}=parent tag)")
        return run
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exp_ids, filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1000)
    for run in parents:
        if run.data.tags.get(SWEEP_TAG) == ref:
            return run
    known = sorted({r.data.tags.get(SWEEP_TAG, "?") for r in parents})
    raise LookupError(f"no sweep named {ref!r} in this MLflow store; known sweeps: {', '.join(known) or 'none'} "
                      "(pass --tracking-uri if the sweep used another store)")
