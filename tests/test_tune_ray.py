"""Tiny sweeps on a real local Ray (CPU): trials in MLflow, divergence, interruption and restore."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from conftest import as_dict, tiny
from mlflow.tracking import MlflowClient

from zv_ray.config import validate_dict
from zv_ray.config.sweep import SweepConfig
from zv_ray.eval.predictions import load_predictions
from zv_ray.tune.compare import compare
from zv_ray.tracking import OUTCOME_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG
from zv_ray.tune.sweep import run_sweep

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("ray_shutdown_after")]

TINY = as_dict(tiny(
    "data.num_objects=12",  # one epoch for 6 steps of 2: every new epoch restarts the stream (seconds)
    "data.materialize=false",
    "data.num_val_objects=2",
    "train.steps=6",
    "train.lr=0.002",
    "train.warmup_steps=2",
    "train.log_every=3",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.image_every=6",
    "cluster.local_num_cpus=8",  # two trials at once: 2 x (1 worker + 2 generator actors) + 1
    "cluster.max_failures=0",
))


def tiny_sweep(tmp_path, name: str, space: dict, **kw) -> SweepConfig:
    overrides = {**TINY, "cluster.storage_path": str(tmp_path), "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return validate_dict(SweepConfig, {"name": name, "overrides": overrides, "space": space, **kw}, source="test")


def assert_no_placement_group_left(timeout_s: float = 60) -> None:
    """Trials ASHA killed must give their workers' CPUs back, or later trials would wait forever."""
    deadline = time.monotonic() + timeout_s
    while (live := [k for k, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"]):
        assert time.monotonic() < deadline, f"placement groups left behind: {live}"
        time.sleep(1)


def trial_runs(uri: str, parent_run_id: str) -> dict[str, object]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("zv-ray").experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {r.data.tags[TRIAL_TAG]: r for r in runs}


def test_four_trials_one_diverging_land_in_mlflow_and_compare(tmp_path):
    space = {"run": {"type": "grid", "values": {
        "base": {},
        "diverge": {"train.skip_grad_norm": 1e-12, "train.max_consecutive_skips": 2},  # every step skipped
        "lr-low": {"train.lr": 0.0005},
        "no-aug": {"zeroverse.p_heightfield": 0.0, "zeroverse.p_boolean": 0.0, "zeroverse.p_wireframe": 0.0},
    }}}
    sweep = tiny_sweep(tmp_path, "four", space, scheduler={"type": "asha", "grace_period": 3}, max_concurrent_trials=2)
    outcome = run_sweep(sweep)
    assert not outcome.interrupted and outcome.num_trials == 4
    assert_no_placement_group_left()

    client = MlflowClient(outcome.tracking_uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("zv-ray").experiment_id], f"tags.`{ROLE_TAG}` = 'parent'"
    )
    assert [p.info.run_id for p in parents] == [outcome.parent_run_id]
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags[SWEEP_TAG] == "four"
    runs = trial_runs(outcome.tracking_uri, outcome.parent_run_id)
    assert len(runs) == 4
    by_label = {r.data.params["sweep.run"]: r for r in runs.values()}
    assert set(by_label) == {"base", "diverge", "lr-low", "no-aug"}
    for label, run in by_label.items():
        assert run.info.status == "FINISHED", label
        assert "val/psnr" in run.data.metrics, label
        assert run.data.tags["zv_ray.run_name"] == f"four-{run.data.tags[TRIAL_TAG]}"
    assert by_label["lr-low"].data.params["train.lr"] == "0.0005"
    diverged = by_label["diverge"]
    assert (diverged.data.tags["diverged"], diverged.data.tags[OUTCOME_TAG]) == ("yes", "diverged")
    for label in ("base", "lr-low", "no-aug"):  # the sweep went on after the diverged trial
        assert by_label[label].data.tags["diverged"] == "no"
        assert by_label[label].data.tags[OUTCOME_TAG] in ("completed", "stopped")  # ASHA may stop some at step 3

    comp = compare(outcome.tracking_uri, "four", tmp_path / "compare")
    assert {r.trial_id for r in comp.rows} == set(runs)
    assert [r.diverged for r in comp.rows].count(True) == 1
    assert all(p.exists() for p in comp.files)
    # Named by the sweep's metric and its one key; every trial's predictions on the same validation objects.
    assert sorted(p.name for p in comp.files) == ["curves.png", "predictions_val.png", "table.txt", "val_psnr_by_run.png"]
    names = set()
    for run in runs.values():
        with tempfile.TemporaryDirectory() as tmp:
            p = load_predictions(Path(client.download_artifacts(run.info.run_id, "predictions/val.npz", tmp)))
        names.add(tuple(p.names))
    assert len(names) == 1 and len(next(iter(names))) == 2  # data.num_val_objects: 2, the same ids in every trial


def test_restore_after_interruption_runs_only_the_remaining_trials(tmp_path):
    sweep = tiny_sweep(tmp_path, "resumable", {"train.lr": {"type": "grid", "values": [0.002, 0.001]}},
                       scheduler={"type": "fifo"}, max_concurrent_trials=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_done = threading.Event()

    def interrupt_after_first_trial() -> None:
        # What Ctrl+C does: Tune's handler (SIGINT; SIGUSR1 here, pytest keeps SIGINT) saves state and stops.
        client = MlflowClient(uri)
        while not sweep_done.wait(1.0):
            exp = client.get_experiment_by_name("zv-ray")
            if exp and client.search_runs([exp.experiment_id], f"tags.`{OUTCOME_TAG}` = 'completed'"):
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    watcher = threading.Thread(target=interrupt_after_first_trial, daemon=True)
    watcher.start()
    first = run_sweep(sweep)
    sweep_done.set()
    watcher.join()
    assert first.interrupted
    client = MlflowClient(uri)
    assert client.get_run(first.parent_run_id).info.status == "KILLED"
    before = trial_runs(uri, first.parent_run_id)
    completed = {t: r for t, r in before.items() if r.data.tags[OUTCOME_TAG] == "completed"}
    assert len(completed) == 1 and len(before) <= 2
    assert all(r.info.status != "RUNNING" for r in before.values())  # interrupted ones end KILLED
    (done_id, done_run), = completed.items()
    done_losses = len(client.get_metric_history(done_run.info.run_id, "train/loss"))
    ray.shutdown()

    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(sweep)
    second = run_sweep(sweep, resume=True)
    assert not second.interrupted and second.parent_run_id == first.parent_run_id
    after = trial_runs(uri, first.parent_run_id)
    assert len(after) == 2 and set(before) <= set(after)
    assert {r.data.tags[OUTCOME_TAG] for r in after.values()} == {"completed"}
    assert all(r.info.status == "FINISHED" for r in after.values())
    # The finished trial was not rerun: same end time, no new loss points.
    assert client.get_run(done_run.info.run_id).info.end_time == done_run.info.end_time
    assert len(client.get_metric_history(done_run.info.run_id, "train/loss")) == done_losses
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"
