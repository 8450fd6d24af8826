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
