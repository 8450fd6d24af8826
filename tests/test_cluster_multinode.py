"""The users' cluster path on one machine, with real parts: a Ray head, a `render` node and a `trainer` node
(three `ray start` processes), runs and datasets on an S3-compatible server (moto on 127.0.0.1, reached through
AWS_ENDPOINT_URL with plain s3:// paths), a real `mlflow server`, and every job through `ray job submit`.

    make test-cluster        # or: .venv/bin/python -m pytest -q -m cluster tests/test_cluster_multinode.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import free_port, wait_http
from conftest import TINY_JOB, submit_and_wait

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=120)
        yield uri
    finally:
        server.terminate()
        server.wait(60)


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


def test_train_resume_finetune_dataset_and_eval_on_s3(cluster, mlflow_server, s3_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from zv_ray.data.parquet import read_shards
    from zv_ray.io import storage
    from zv_ray.model.checkpoint import load_checkpoint

    address, env, marker = cluster
    os.environ.update(s3_server)  # this process reads the bucket too
    bucket = f"s3://zv-test/{uuid.uuid4().hex}"
    runs = f"{bucket}/runs"
    job = [*TINY_JOB, "--set", f"cluster.storage_path={runs}", "--set", f"mlflow.tracking_uri={mlflow_server}",
           "--set", "cluster.worker_resource=trainer", "--set", "data.generator_resource=render",
           "--set", "cluster.max_failures=1", "--set", "train.steps=6", "--set", "train.checkpoint_every=2",
           "--set", "train.log_every=1", "--set", "train.eval_every=6"]

    # 1. Checkpoints on S3; the train worker is SIGKILLed at step 3 and the group restores step 2 from S3.
    logs = submit_and_wait(address, env, ["zv-ray", "train", "configs/tiny.yaml", *job, "--set", "cluster.run_name=a",
                                          "--set", "train.stop_after=4"])
    assert "training finished" in logs and marker.exists(), logs[-3000:]
    assert load_checkpoint(f"{runs}/a")["step"] == 4
    client = MlflowClient(mlflow_server)
    (run_a,) = client.search_runs([client.get_experiment_by_name("zv-ray-tiny").experiment_id],
                                  filter_string="tags.`zv_ray.run_name` = 'a'")
    resumed = [m.value for m in client.get_metric_history(run_a.info.run_id, "train/resumed_from_step")]
    assert resumed == [2.0], resumed

    # 2. --resume from S3 continues the step count in the same MLflow run.
    submit_and_wait(address, env, ["zv-ray", "train", "configs/tiny.yaml", *job, "--set", "cluster.run_name=a", "--resume"])
    assert load_checkpoint(f"{runs}/a")["step"] == 6
    steps = sorted(m.step for m in client.get_metric_history(run_a.info.run_id, "train/loss"))
    assert steps[-1] == 6 and steps.count(5) == 1 and steps.count(6) == 1, steps

    # 3. A dataset written to S3 by the render node, then a run trained on it, initialised from run a on S3.
    dataset = f"{bucket}/zeroverse"
    submit_and_wait(address, env, ["zv-ray", "dataset", "--n", "4", "--out", dataset, "--views", "6", "--res", "32",
                                   "--set", "zeroverse.mesh_resolution=8", "--set", "data.generator_resource=render",
                                   "--no-contact-sheet"])
    assert sorted(r["object_id"] for r in read_shards(dataset)) == [0, 1, 2, 3]
    assert not Path(REPO, "s3:").exists()
    submit_and_wait(address, env, ["zv-ray", "train", "configs/tiny.yaml", *job, "--set", "cluster.run_name=b",
                                   "--set", "data.source=parquet", "--set", f"data.parquet_path={dataset}",
                                   "--set", f"train.init_from={runs}/a", "--set", "train.steps=2",
                                   "--set", "train.warmup_steps=0"])
    assert load_checkpoint(f"{runs}/b")["step"] == 2

    # 4. Evaluation reads the checkpoint straight from S3.
    out = tmp_path / "eval"
    proc = subprocess.run([str(BIN / "zv-ray"), "eval", "--checkpoint", f"{runs}/b", "--zeroverse", "1", "--out", str(out),
                           "--tracking-uri", mlflow_server, "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **s3_server})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["checkpoint"].startswith(f"{runs}/b/checkpoint_")
    assert storage.exists(f"{runs}/b")
