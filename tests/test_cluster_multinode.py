"""The users' cluster path on one machine, with real parts: a Ray head, a `render` node and a `trainer` node
(three `ray start` processes), runs and datasets on an S3-compatible server (moto on 127.0.0.1, reached through
AWS_ENDPOINT_URL with plain s3:// paths), a real `mlflow server`, and every job through `ray job submit`.

    make test-cluster        # or: .venv/bin/python -m pytest -q -m cluster tests/test_cluster_multinode.py

One cluster for the module; each stage is a module-scoped fixture (a job, run once) and each test checks one stage's
effect, so a failed stage fails its own test and those that need its output, not the rest:
run a (killed at step 3, restored from S3) -> a resumed to step 6 -> run b (on the S3 dataset, from a's weights) -> eval;
the dataset job stands alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from conftest import BIN, REPO, TINY_JOB, MlflowServer, free_port, submit_and_wait

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Head (no CPUs for work) + a CPU render node + a trainer node, all on loopback; the S3 environment and a
    once-only SIGKILL of a train worker at step 3 are in every node's environment, as a cluster's would be."""
    temp_dir = Path(f"/tmp/zvray-mn-{os.getpid()}")  # short: Ray's socket paths have a length limit
    marker = tmp_path_factory.mktemp("fault") / "killed-once"
    gcs, dash = free_port(), free_port()
    env = {**os.environ, **s3_server, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled", "ZV_RAY_FAULT_AT_STEP": "3", "ZV_RAY_FAULT_MARKER": str(marker),
           "ZV_RAY_FAULT_KIND": "sigkill"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    starts = [
        ["--head", "--num-cpus=1", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--temp-dir={temp_dir}"],
        [f"--address=127.0.0.1:{gcs}", "--num-cpus=2", '--resources={"render": 2}'],
        [f"--address=127.0.0.1:{gcs}", "--num-cpus=2", '--resources={"trainer": 1}'],
    ]
    try:
        for args in starts:
            subprocess.run([str(BIN / "ray"), "start", *args, *common], env=env, check=True, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dash}", env, marker
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A fresh prefix in the test bucket; this process reads it too (through the S3 environment)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.items():
            mp.setenv(key, value)
        yield f"s3://zv-test/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def runs(bucket) -> str:
    return f"{bucket}/runs"


@pytest.fixture(scope="module")
def job(runs, mlflow_server) -> list[str]:
    """`zv-ray train` arguments shared by every training job: the tiny recipe on the trainer node, generators on the
    render node, checkpoints on S3 every 2 steps, MLflow on the server."""
    return ["zv-ray", "train", "configs/tiny.yaml", *TINY_JOB, "--set", f"cluster.storage_path={runs}",
            "--set", f"mlflow.tracking_uri={mlflow_server}", "--set", "cluster.worker_resource=trainer",
            "--set", "data.generator_resource=render", "--set", "cluster.max_failures=1", "--set", "train.steps=6",
            "--set", "train.checkpoint_every=2", "--set", "train.log_every=1", "--set", "train.eval_every=6"]


def mlflow_run_id(tracking_uri: str, run_name: str) -> str:
    from mlflow.tracking import MlflowClient

    from zv_ray.tracking import RUN_NAME_TAG

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("zv-ray-tiny").experiment_id],
                                filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'")
    return run.info.run_id


@pytest.fixture(scope="module")
def run_a(cluster, job) -> str:
    """Run a, stopped after step 4; the cluster's fault SIGKILLs its train worker at step 3 (once). Its job logs."""
    address, env, _ = cluster
    return submit_and_wait(address, env, [*job, "--set", "cluster.run_name=a", "--set", "train.stop_after=4"])


@pytest.fixture(scope="module")
def resumed_a(cluster, job, run_a) -> str:
    """Run a continued with --resume to its last step, 6. Its job logs."""
    address, env, _ = cluster
    return submit_and_wait(address, env, [*job, "--set", "cluster.run_name=a", "--resume"])


@pytest.fixture(scope="module")
def dataset(cluster, bucket) -> str:
    """4 objects written to S3 as Parquet shards by the render node's actors."""
    address, env, _ = cluster
    path = f"{bucket}/zeroverse"
    submit_and_wait(address, env, ["zv-ray", "dataset", "--n", "4", "--out", path, "--views", "6", "--res", "32",
                                   "--set", "zeroverse.mesh_resolution=8", "--set", "data.generator_resource=render",
                                   "--no-contact-sheet"])
    return path


@pytest.fixture(scope="module")
def run_b(cluster, job, runs, dataset, resumed_a) -> str:
    """Run b: 2 steps on the S3 dataset, initialised from run a's last checkpoint (step 6). Its learning rate is
    1e-9, so its weights stay a's to ~1e-8: what init_from loaded is checkable in its own checkpoint."""
    address, env, _ = cluster
    submit_and_wait(address, env, [*job, "--set", "cluster.run_name=b", "--set",
                                   f"data.sources=[{{kind: parquet, path: {dataset}}}]", "--set", f"train.init_from={runs}/a",
                                   "--set", "train.steps=2", "--set", "train.warmup_steps=0", "--set", "train.lr=1e-9"])
    return f"{runs}/b"


def test_a_killed_train_worker_restores_the_last_checkpoint_from_s3(cluster, run_a, runs, mlflow_server):
    from mlflow.tracking import MlflowClient

    from zv_ray.model.checkpoint import load_checkpoint

    _, _, marker = cluster
    assert "training finished" in run_a and marker.exists(), run_a[-3000:]
    assert load_checkpoint(f"{runs}/a")["step"] == 4
    history = MlflowClient(mlflow_server).get_metric_history(mlflow_run_id(mlflow_server, "a"), "train/resumed_from_step")
    resumed = [m.value for m in history]
    assert resumed == [2.0], resumed


def test_resume_from_s3_continues_the_step_count_in_the_same_mlflow_run(resumed_a, runs, mlflow_server):
    from mlflow.tracking import MlflowClient

    from zv_ray.model.checkpoint import load_checkpoint

    assert load_checkpoint(f"{runs}/a")["step"] == 6
    history = MlflowClient(mlflow_server).get_metric_history(mlflow_run_id(mlflow_server, "a"), "train/loss")
    steps = sorted(m.step for m in history)
    assert steps[-1] == 6 and steps.count(5) == 1 and steps.count(6) == 1, steps


def test_the_render_node_writes_a_dataset_to_s3(dataset):
    from zv_ray.data.parquet import read_shards

    assert sorted(r["object_id"] for r in read_shards(dataset)) == [0, 1, 2, 3]
    assert not Path(REPO, "s3:").exists()  # no local folder named like the URL


def test_init_from_starts_a_run_on_the_s3_dataset_from_the_given_weights(run_b, runs):
    from zv_ray.model.checkpoint import config_of, load_checkpoint
    from zv_ray.model.gslrm import GSLRM

    source, b = load_checkpoint(f"{runs}/a"), load_checkpoint(run_b)
    assert b["step"] == 2 and config_of(b).train.init_from == f"{runs}/a"
    # a's weights are not the fresh ones (6 steps at lr 1e-3 moved them by ~1e-3), and b holds a's, not fresh ones.
    cfg = config_of(source)
    torch.manual_seed(cfg.seed)  # as the workers build their initial weights (train/worker.py build_or_resume)
    fresh = GSLRM(cfg.model).state_dict()
    assert max((source["model"][k] - fresh[k]).abs().max().item() for k in fresh) > 1e-4
    assert b["model"].keys() == source["model"].keys()
    for key, weights in source["model"].items():
        torch.testing.assert_close(b["model"][key], weights, rtol=0, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")


def test_eval_reads_the_checkpoint_straight_from_s3(run_b, s3_server, mlflow_server, tmp_path):
    from zv_ray.io import storage

    out = tmp_path / "eval"
    proc = subprocess.run([str(BIN / "zv-ray"), "eval", "--checkpoint", run_b, "--zeroverse", "1", "--out", str(out),
                           "--tracking-uri", mlflow_server, "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **s3_server})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["checkpoint"].startswith(f"{run_b}/checkpoint_")
    assert storage.exists(run_b)
