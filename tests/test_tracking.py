"""zv_ray/tracking.py against a sqlite MLflow store (no Ray): how runs end, and the small readers and writers."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from zv_ray.tracking import (
    DIVERGED_TAG, OUTCOME_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG, download_artifact, end_trial_run, fail_run_on_error,
    log_dict, metric_history, run_metrics,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"  # one store for the module: creating one takes seconds
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("zv-ray", artifact_location=str(tmp / "artifacts"))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_run_ends_failed_on_any_error_and_the_error_goes_on(store, error):
    uri, client, exp = store
    run_id = client.create_run(exp).info.run_id
    with pytest.raises(error), fail_run_on_error(uri, run_id):
        raise error("boom")
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_run_that_succeeds_is_left_to_the_caller(store):
    uri, client, exp = store
    run_id = client.create_run(exp).info.run_id
    with fail_run_on_error(uri, run_id):
        pass
    assert client.get_run(run_id).info.status == "RUNNING"


def test_end_trial_run_tags_and_ends_only_that_trial(store):
    uri, client, exp = store
    parent = client.create_run(exp, tags={SWEEP_TAG: "s", ROLE_TAG: "parent"}).info.run_id
    trials = {t: client.create_run(exp, tags={"mlflow.parentRunId": parent, TRIAL_TAG: t}).info.run_id
              for t in ("t0", "t1")}
    end_trial_run(uri, exp, parent, "t0", status="FINISHED", outcome="diverged", diverged=True)
    t0, t1 = (client.get_run(trials[t]) for t in ("t0", "t1"))
    assert t0.info.status == "FINISHED"
    assert (t0.data.tags[OUTCOME_TAG], t0.data.tags[DIVERGED_TAG]) == ("diverged", "yes")
    assert t1.info.status == "RUNNING" and OUTCOME_TAG not in t1.data.tags


def test_metrics_and_artifacts_read_back(store, tmp_path):
    uri, client, exp = store
    run_id = client.create_run(exp).info.run_id
    for step, loss in [(4, 0.5), (2, 0.9)]:
        client.log_metric(run_id, "train/loss", loss, step=step)
    assert metric_history(uri, run_id, "train/loss") == [(2, 0.9), (4, 0.5)]
    assert run_metrics(uri, run_id) == {"train/loss": 0.5}  # the value at the latest step
    log_dict(uri, run_id, {"name": "s", "num_samples": 2}, "sweep.yaml")
    logged = download_artifact(uri, run_id, "sweep.yaml", tmp_path)
    assert yaml.safe_load(logged.read_text()) == {"name": "s", "num_samples": 2}
    assert download_artifact(uri, run_id, "predictions/val.npz", tmp_path) is None


def test_the_workers_logger_rides_out_a_tracking_server_restart(tmp_path, monkeypatch):
    """A real `mlflow server` stopped for a while under a run: logging neither blocks nor raises, and everything
    logged meanwhile arrives once the server is back, with the outage's length."""
    import time

    import numpy as np
    from conftest import MlflowServer

    from zv_ray.tracking import RunLogger

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: RunLogger does the retrying
    server = MlflowServer(tmp_path).start()
    try:
        client = MlflowClient(server.uri)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        logger = RunLogger(server.uri, run_id)
        logger.metrics({"train/loss": 1.0}, step=1)
        server.stop()
        started = time.monotonic()
        for step in range(2, 6):
            logger.metrics({"train/loss": 1.0 / step}, step=step)
        logger.image(np.zeros((4, 4, 3), np.uint8), "images/step_5.png")
        (tmp_path / "g.ply").write_text("ply")
        logger.artifact(tmp_path / "g.ply", "gaussians")
        (tmp_path / "g.ply").unlink()  # the caller's temporary folder is gone before the upload
        assert time.monotonic() - started < 1.0, "logging waited on the server"
        time.sleep(3)
        server.start()
        logger.close(flush_timeout_s=120)
        assert logger.unsent == 0
        assert [s for s, _ in metric_history(server.uri, run_id, "train/loss")] == [1, 2, 3, 4, 5]
        (outage,) = metric_history(server.uri, run_id, "system/tracking_outage_s")
        assert outage[1] >= 3
        paths = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "images")}
        assert {"gaussians", "images/step_5.png"} <= paths
    finally:
        server.stop()
