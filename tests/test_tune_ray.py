"""Tiny sweeps on a real local Ray (CPU): trials in MLflow, divergence, interruption and restore, and the shipped
tiny experiments end to end (arms over seeds, per-object scores, compare's intervals)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from conftest import BIN, GSO_DIR, REPO, as_dict, tiny
from mlflow.tracking import MlflowClient
from rich.console import Console

from zv_ray.config import validate_dict
from zv_ray.config.sweep import SweepConfig, load_sweep_config, num_trials
from zv_ray.eval.object_scores import load_object_scores
from zv_ray.eval.predictions import load_predictions
from zv_ray.tune.compare import compare, tables
from zv_ray.tracking import OUTCOME_TAG, ROLE_TAG, SEED_TAG, SWEEP_TAG, TRIAL_TAG
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
    assert sorted(p.name for p in comp.files) == ["curves.png", "intervals_val.png", "predictions_val.png", "table.txt",
                                                  "val_psnr_by_run.png"]
    # One seed per arm: each arm against the default reference (the grid's first label), over the 2 objects.
    stats = comp.suites()["val"]
    assert comp.reference == "run=base" and stats[0].arm == "run=base" and len(stats) == 4
    assert all((s.diff.seeds, s.diff.objects) == (1, 2) for s in stats[1:])
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


def run_experiment(name: str, tmp_path: Path, monkeypatch, workdir: Path = REPO, **overrides) -> tuple[SweepConfig, object]:
    """A shipped tiny experiment as `zv-ray sweep configs/sweeps/NAME.yaml` runs it in `workdir`, into tmp_path."""
    sweep = load_sweep_config(REPO / "configs" / "sweeps" / f"{name}.yaml")
    monkeypatch.chdir(workdir)  # its ../shared/eval/gso (and outputs/...) are relative to the working directory
    sweep = sweep.model_copy(update={"storage_path": str(tmp_path), "overrides": {
        **sweep.overrides, "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **overrides}})
    outcome = run_sweep(sweep)
    assert not outcome.interrupted
    return sweep, outcome


def scores_of(uri: str, run_id: str, suite: str):
    with tempfile.TemporaryDirectory() as tmp:
        return load_object_scores(Path(MlflowClient(uri).download_artifacts(run_id, f"scores/{suite}.json", tmp)))


@pytest.mark.skipif(not GSO_DIR.is_dir(), reason="needs ../shared/eval/gso")
def test_the_views_experiment_runs_two_arms_over_two_seeds_and_compares_them_object_by_object(tmp_path, monkeypatch):
    """configs/sweeps/views_tiny.yaml end to end: 4 vs 8 input views x seeds 0, 1, each run scored at its end on
    the same real and held-out Zeroverse objects, then the intervals of `zv-ray compare`."""
    sweep, outcome = run_experiment("views_tiny", tmp_path, monkeypatch)
    runs = trial_runs(outcome.tracking_uri, outcome.parent_run_id)
    assert outcome.num_trials == 4 and len(runs) == 4
    arms = {(r.data.params["train.num_input_views"], r.data.tags[SEED_TAG]) for r in runs.values()}
    assert arms == {(v, s) for v in ("4", "8") for s in ("0", "1")}  # every arm with every seed
    assert all(r.data.tags[OUTCOME_TAG] == "completed" for r in runs.values())  # FIFO: every run to the end

    scores = {(r.data.params["train.num_input_views"], int(r.data.params["seed"])):
              {suite: scores_of(outcome.tracking_uri, r.info.run_id, suite) for suite in ("gso", "val")}
              for r in runs.values()}
    for suite, count in (("gso", 2), ("val", 2)):
        names = {tuple(sorted(s[suite].objects)) for s in scores.values()}
        assert len(names) == 1 and len(next(iter(names))) == count  # the same objects for every arm and seed
        assert {s[suite].step for s in scores.values()} == {8}  # the final evaluation

    comp = compare(outcome.tracking_uri, "views-tiny", tmp_path / "compare")
    assert comp.reference == "train.num_input_views=8"
    for suite in ("gso", "val"):
        four = next(s for s in comp.suites()[suite] if s.arm == "train.num_input_views=4")
        # The paired difference is the mean over seeds and objects of (4 views - 8 views), object by object.
        gaps = [p4 - scores[("8", seed)][suite].objects[o]["psnr"]
                for (views, seed), s in scores.items() if views == "4" for o, v in s[suite].objects.items()
                for p4 in [v["psnr"]]]
        assert four.diff.mean == pytest.approx(sum(gaps) / len(gaps))
        assert (four.diff.seeds, four.diff.objects, four.runs) == (2, 2, 2)
        assert four.verdict("max") == ("not distinguishable" if four.diff.spans_zero else
                                       "better" if four.diff.mean > 0 else "worse")
    console = Console(record=True, width=250)
    for t in tables(comp):
        console.print(t)
    assert "train.num_input_views=8 (reference)" in console.export_text()
    logged = {a.path for a in MlflowClient(outcome.tracking_uri).list_artifacts(outcome.parent_run_id, "compare")}
    assert {"compare/intervals_gso.png", "compare/intervals_val.png", "compare/table.txt"} <= logged


@pytest.mark.slow
@pytest.mark.skipif(not GSO_DIR.is_dir(), reason="needs ../shared/eval/gso")
@pytest.mark.parametrize("name", ["augmentation_tiny", "perceptual_tiny", "data_size_tiny", "data_source_tiny"])
def test_every_tiny_experiment_runs_from_its_file(name, tmp_path, monkeypatch):
    overrides = {}
    if name == "perceptual_tiny":  # no VGG19 weights offline: a file of random ones in the real format
        from test_vgg19 import write_matconvnet_vgg19

        write_matconvnet_vgg19(tmp_path / "vgg19.mat")
        overrides["loss.vgg19_weights"] = str(tmp_path / "vgg19.mat")
    if name == "data_source_tiny":  # its real arm reads outputs/gso_train: the 15 scans rendered as its header says
        monkeypatch.chdir(REPO)
        out = tmp_path / "work" / "outputs" / "gso_train"
        proc = subprocess.run([str(BIN / "zv-ray"), "dataset", "--meshes", "../shared/train/gso", "--out", str(out),
                               "--config", "configs/tiny.yaml"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # ../shared/eval/gso from the work folder
        sweep, outcome = run_experiment(name, tmp_path, monkeypatch, workdir=tmp_path / "work", **overrides)
    else:
        sweep, outcome = run_experiment(name, tmp_path, monkeypatch, **overrides)
    runs = trial_runs(outcome.tracking_uri, outcome.parent_run_id)
    assert len(runs) == outcome.num_trials == num_trials(sweep)
    assert all(r.data.tags[OUTCOME_TAG] in ("completed", "diverged") for r in runs.values())
    comp = compare(outcome.tracking_uri, outcome.parent_run_id, tmp_path / "compare")
    for suite in ("gso", "val"):
        stats = comp.suites()[suite]
        assert stats[0].reference and len(stats) == outcome.num_trials // sweep.seeds
        assert all(s.diff is not None for s in stats[1:])
    if name == "perceptual_tiny":  # the no-safeguards arms ran with no clipping and no threshold
        off = [r for r in runs.values() if r.data.params["sweep.safeguards"] == "off"]
        assert {(r.data.params["train.grad_clip"], r.data.params["train.skip_grad_norm"]) for r in off} == {("0.0", "None")}
