"""Failure drills on a real local Ray: the faults a cluster brings, and what zv-ray does about each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from conftest import REPO, tiny, wait_for
from mlflow.tracking import MlflowClient

from zv_ray.cluster.session import init_ray
from zv_ray.config import load_config
from zv_ray.data.parquet import CorruptShardError, shard_paths
from zv_ray.model.checkpoint import load_checkpoint
from zv_ray.pipeline import write_dataset
from zv_ray.tracking import RUN_NAME_TAG
from zv_ray.train.trainer import run_training

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("ray_shutdown_after")]

# Every step logged (the drills watch the step count), no held-out objects, one restart allowed.
# The exactly-once checks read each worker's consumed ids (train.audit_consumed_ids).
TINY = tiny("train.log_every=1", "data.num_val_objects=0", "cluster.local_num_cpus=4", "cluster.max_failures=1",
            "train.audit_consumed_ids=true")


def ray_processes(title: str) -> list[psutil.Process]:
    """This test's own Ray worker processes whose title names `title` (other Ray sessions are left alone)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if title in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def train_in_background(cfg) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["outcome"] = run_training(cfg)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def consumed_object_ids(run_dir: Path) -> list[int]:
    """The object ids every rank trained on, step by step (train.audit_consumed_ids: [source, object id, sample]
    per sample)."""
    lines = [json.loads(line) for f in sorted((run_dir / "consumed_ids").glob("rank*.jsonl")) for line in f.open()]
    return [sample[-2] for record in sorted(lines, key=lambda r: r["step"]) for sample in record["samples"]]


def last_logged_step(db: Path) -> int:
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return max((m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")), default=0) if runs else 0


def frozen_inside_a_render_call() -> psutil.Process | None:
    """A generator actor caught executing a batch (Ray titles it `ray::MapWorker(...).submit` meanwhile), frozen
    there by SIGSTOP; None when no actor is inside a call right now."""

    def in_call(proc: psutil.Process) -> bool:
        return " ".join(proc.cmdline()).strip().endswith(".submit")

    for proc in ray_processes("SampleActor"):
        try:
            if in_call(proc):
                proc.suspend()
                if in_call(proc):  # still inside the call, and now it cannot finish it
                    return proc
                proc.resume()
        except psutil.Error:
            continue
    return None


def test_killed_generator_actor_loses_and_duplicates_no_object(tmp_path, monkeypatch):
    """A generator actor dies hard (like an OOM kill) holding an unrendered object while training consumes others:
    Ray replaces it and reruns the batch, and the worker trains on every id exactly once (nothing lost or replayed)."""
    from actors.render import FAULT_ENV

    arm = tmp_path / "crash-armed"
    monkeypatch.setenv(FAULT_ENV, str(arm))  # the local Ray started below hands it to every actor
    # One epoch of 8 objects, batch 1, 2 actors with up to 2 batches each in flight (Ray Data's default).
    cfg = load_config(None, [*TINY, f"cluster.storage_path={tmp_path}", "cluster.run_name=gen-kill",
                             "data.num_objects=8", "data.materialize=false", "data.num_generator_actors=2",
                             "train.global_batch_size=1", "train.audit_consumed_ids=true",
                             "data.samples_per_object=1", "data.shuffle_window=1",  # one sample per id, in id order
                             "train.steps=8", "train.checkpoint_every=8", "zeroverse.mesh_resolution=24"])
    db = tmp_path / "mlflow.db"
    thread, box = train_in_background(cfg)
    found: list[psutil.Process] = []

    def catch() -> bool:
        if (proc := frozen_inside_a_render_call()) is not None:
            found.append(proc)
        return bool(found) or not thread.is_alive()

    # One actor is held (SIGSTOP) inside a render call, with its next batch queued behind the current one.
    wait_for(catch, 300, "a generator actor inside a render call")
    assert found, ("training ended before an actor was caught rendering", box)
    held = found[0]
    try:
        # The worker takes units in order, so it waits on the held one: the run cannot finish before the crash.
        assert thread.is_alive() and last_logged_step(db) < 8, box
        pool = {p.pid for p in ray_processes("SampleActor")}
        arm.touch()  # the next actor call to start deletes it and exits at once, its object unrendered (actors/render.py)
    finally:
        held.resume()
    wait_for(lambda: not arm.exists() or not thread.is_alive(), 120, "an actor call to take the crash")
    assert not arm.exists(), "no actor call started after arming: nothing died mid-stream"
    assert thread.is_alive()
    # A pool of 2 showing a third process: Ray replaced the dead actor (which reruns its batch, checked below).
    wait_for(lambda: {p.pid for p in ray_processes("SampleActor")} - pool or not thread.is_alive(), 120,
             "the replacement actor")
    assert {p.pid for p in ray_processes("SampleActor")} - pool, "no replacement actor appeared"
    thread.join(600)
    assert "error" not in box, box.get("error")
    consumed = consumed_object_ids(tmp_path / "gen-kill")
    assert consumed == list(range(8)), consumed


def test_killed_train_worker_resumes_from_last_checkpoint(tmp_path):
    cfg = load_config(None, [*TINY, f"cluster.storage_path={tmp_path}", "cluster.run_name=worker-kill",
                             "data.num_objects=2", "data.materialize=true", "train.global_batch_size=2", "train.steps=30",
                             "train.checkpoint_every=5"])
    thread, box = train_in_background(cfg)
    run_dir = tmp_path / "worker-kill"
    wait_for(lambda: list(run_dir.glob("checkpoint_*/checkpoint.pt")), 400, "the first checkpoint")
    killed_after = load_checkpoint(run_dir)["step"]
    # Kill once training is past that checkpoint, so Ray Train has registered it.
    wait_for(lambda: last_logged_step(tmp_path / "mlflow.db") >= killed_after + 2, 300, "steps past the checkpoint")
    workers = ray_processes("RayTrainWorker")
    assert workers, "no train worker process found"
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(600)
    assert "error" not in box, box.get("error")
    outcome = box["outcome"]
    assert load_checkpoint(outcome.checkpoint)["step"] == 30
    client = MlflowClient(outcome.tracking_uri)
    steps = [m.step for m in client.get_metric_history(outcome.mlflow_run_id, "train/loss")]
    resumed = [m.value for m in client.get_metric_history(outcome.mlflow_run_id, "train/resumed_from_step")]
    # The restarted group restored a checkpoint at or after the one seen before the kill, not step 0.
    assert len(resumed) == 1 and killed_after <= resumed[0] < 30, resumed
    assert steps.count(1) == 1 and max(steps) == 30


def test_corrupt_parquet_shard_fails_before_training_naming_it_or_is_skipped(tmp_path, caplog):
    base = [*TINY, f"cluster.storage_path={tmp_path / 'runs'}", "data.objects_per_shard=2"]
    shards = tmp_path / "shards"
    cfg = load_config(None, base)
    init_ray(cfg.cluster)  # as `zv-ray dataset` does: a local Ray with room for actors and writers
    write_dataset(cfg, shards, count=6)
    victim = Path(shard_paths(shards)[1])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    parquet = [*base, f"data.sources=[{{kind: parquet, path: {shards}}}]", "train.global_batch_size=2",
               "train.steps=2", "train.checkpoint_every=2", "train.audit_consumed_ids=true"]
    with pytest.raises(CorruptShardError, match=victim.name):
        run_training(load_config(None, [*parquet, "cluster.run_name=corrupt-fail"]))
    # Named before any training: no run folder (so no checkpoint), no MLflow run.
    assert not (tmp_path / "runs" / "corrupt-fail").exists()
    db = tmp_path / "runs" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments, filter_string=f"tags.`{RUN_NAME_TAG}` = 'corrupt-fail'")

    with caplog.at_level("WARNING"):
        outcome = run_training(load_config(None, [*parquet, "cluster.run_name=corrupt-skip", "data.on_corrupt=skip"]))
    assert victim.name in caplog.text and "skip" in caplog.text.lower()
    consumed = consumed_object_ids(tmp_path / "runs" / "corrupt-skip")
    assert len(consumed) == 4 and set(consumed) <= {0, 1, 4, 5}
    assert load_checkpoint(outcome.checkpoint)["step"] == 2


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [("train:\n  steps: many\n", "train.steps"), ("train:\n  stepz: 10\n", "train.stepz"),
     ("zeroverse:\n  p_boolean: 3\n", "zeroverse.p_boolean")],
)
def test_bad_config_is_one_clear_error_before_any_cluster_work(tmp_path, yaml_text, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text + f"cluster:\n  storage_path: {tmp_path / 'runs'}\n")
    proc = subprocess.run([sys.executable, "-m", "zv_ray.cli", "train", str(bad)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists(), "cluster work started before the config was checked"
