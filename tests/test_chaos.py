"""Chaos drills on a simulated multi-node cluster: a Ray head, a `render` node and two `trainer` nodes (four `ray start`
processes), a real `mlflow server`, an S3-compatible server behind a proxy that can cut it off. Every job goes through
`ray job submit`. Each drill breaks one part mid-run and checks the run against an uninterrupted one of the same
config: the same samples at every step (the audit), the same final weights.

    make test-chaos        # or: .venv/bin/python -m pytest -q -s -m chaos tests/test_chaos.py

The drills print what was broken, when, how long the run took to train again, how many steps it trained twice, and
the audit's result (the closing-note figures).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import BIN, TINY_JOB, MlflowServer, free_port, submit, wait_for, wait_job

from zv_ray.model.checkpoint import load_checkpoint
from zv_ray.train.audit import check, compare, load

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]

# Streamed from the render node (each trainer's own stream), 24 steps of a global batch of 4 on one or two trainers
# (elastic), a checkpoint every 4 steps, every step logged and audited.
DRILL = [*TINY_JOB, *(arg for kv in [
    "data.materialize=false", "data.num_objects=8", "data.samples_per_object=2", "data.shuffle_window=4",
    "data.num_val_objects=0", "data.generator_resource=render", "data.num_generator_actors=2",
    "train.global_batch_size=4", "train.micro_batch_size=2", "train.steps=24", "train.checkpoint_every=4",
    "train.log_every=1", "train.eval_every=24", "train.image_every=24", "train.audit_consumed_ids=true",
    "cluster.worker_resource=trainer", "cluster.num_workers=[1, 2]", "cluster.elastic_resize_interval_s=5",
    "cluster.max_failures=8", "cluster.storage_retry_wait_s=10",
] for arg in ("--set", kv))]
EXPERIMENT = "zv-ray-tiny"


class Node:
    """One `ray start` worker node that a drill can kill (SIGKILL of its raylet, as a lost machine) and start again."""

    def __init__(self, gcs: int, env: dict, resources: dict, cpus: int = 2):
        self.port, self.env = free_port(), env
        self.args = [f"--address=127.0.0.1:{gcs}", f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}",
                     f"--node-manager-port={self.port}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def start(self) -> None:
        subprocess.run([str(BIN / "ray"), "start", *self.args], env=self.env, check=True, capture_output=True, timeout=180)

    def kill(self) -> None:
        raylets = [p for p in psutil.process_iter(["cmdline"])
                   if "raylet" in " ".join(p.info["cmdline"] or [])[:200] and f"--node_manager_port={self.port}" in p.info["cmdline"]]
        assert len(raylets) == 1, f"expected one raylet on port {self.port}, found {len(raylets)}"
        os.kill(raylets[0].pid, signal.SIGKILL)


class CuttableProxy:
    """A TCP proxy to the S3 server that a drill can cut: while cut, open connections are closed and new ones refused
    (an S3 endpoint that is down), until it is restored."""

    def __init__(self, target_port: int):
        self.target, self.port = target_port, free_port()
        self.cut = threading.Event()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        self.cut.set()
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()

    def up(self) -> None:
        self.cut.clear()


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(s3_server):
    return CuttableProxy(int(s3_server["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))


@pytest.fixture(scope="module")
def cluster(s3_server, proxy):
    """Head (no CPUs for work) + a render node + two trainer nodes, on loopback; S3 through the proxy everywhere."""
    temp_dir = Path(f"/tmp/zvray-chaos-{os.getpid()}")  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    env = {**os.environ, **s3_server, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
           "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # zv-ray's logger retries; MLflow's own backoff only slows it
    env.pop("RAY_ADDRESS", None)
    nodes = {"render": Node(gcs, env, {"render": 2}), "trainer_a": Node(gcs, env, {"trainer": 1}),
             "trainer_b": Node(gcs, env, {"trainer": 1})}
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus=1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dash}", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=180)
        for node in nodes.values():
            node.start()
        yield f"http://127.0.0.1:{dash}", env, nodes
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_id(tracking_uri: str, run_name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from zv_ray.tracking import RUN_NAME_TAG

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'") \
        if experiment else []
    return runs[0].info.run_id if runs else None


def history(tracking_uri: str, run_name: str, key: str) -> list:
    """(step, value, time s) of one metric, in logging order."""
    from mlflow.tracking import MlflowClient

    rid = run_id(tracking_uri, run_name)
    points = MlflowClient(tracking_uri).get_metric_history(rid, key) if rid else []
    return sorted(((m.step, m.value, m.timestamp / 1000) for m in points), key=lambda p: p[2])


def trained_step(tracking_uri: str, run_name: str) -> int:
    try:
        return max((s for s, _, _ in history(tracking_uri, run_name, "train/loss")), default=0)
    except Exception:  # noqa: BLE001 - the server is the thing being broken in one drill
        return 0


def start(cluster, mlflow, storage: str, name: str) -> str:
    address, env, _ = cluster
    return submit(address, env, ["zv-ray", "train", "configs/tiny.yaml", *DRILL, "--set", f"cluster.storage_path={storage}",
                                 "--set", f"cluster.run_name={name}", "--set", f"mlflow.tracking_uri={mlflow.uri}"])


def started_past(cluster, mlflow, storage: str, name: str, step: int) -> str:
    """A drill's run submitted, once it has trained `step` steps (the moment to break something); its job id."""
    job = start(cluster, mlflow, storage, name)
    wait_for(lambda: trained_step(mlflow.uri, name) >= step, 600, f"step {step} of run {name}")
    return job


def report(what: str, broken_at: float, mlflow, name: str, run_dir: Path | None, calm_dir: Path, final: dict) -> dict:
    """The drill's figures: recovery time (from the break to the first step trained after the first restore that
    followed it; None when the run never restarted), the longest pause between two logged steps, steps trained twice,
    the audit against the calm run (when the run folder is local), the largest difference of its `final` weights from
    the calm run's."""
    losses = history(mlflow.uri, name, "train/loss")
    restores = [(s, t) for s, _, t in history(mlflow.uri, name, "train/resumed_from_step") if t > broken_at]
    after = [t for _, _, t in losses if restores and t > restores[0][1]]
    steps = [s for s, _, _ in losses]
    figures = {
        "drill": what, "recovered_s": round(after[0] - broken_at, 1) if after else None,
        "longest_pause_s": round(max(b - a for (_, _, a), (_, _, b) in zip(losses, losses[1:])), 1),
        "steps_trained_twice": len(steps) - len(set(steps)),
        "restored_from": [v for _, v, _ in history(mlflow.uri, name, "train/resumed_from_step")],
        "workers": [v for _, v, _ in history(mlflow.uri, name, "train/workers")],
    }
    figures["max_weight_difference"] = max_difference(weights(calm_dir), final)
    if run_dir is not None:
        records = load(run_dir)
        audit, against = check(records), compare(load(calm_dir), records)
        figures |= {"audit_ok": audit.ok, "steps_compared": against.compared, "mismatches": len(against.mismatches),
                    "against_ok": against.ok}
    print(f"\nDRILL {json.dumps(figures)}")
    return figures


@pytest.fixture(scope="module")
def calm(cluster, mlflow, tmp_path_factory) -> Path:
    """The uninterrupted run every drill is checked against."""
    runs = tmp_path_factory.mktemp("runs")
    address = cluster[0]
    wait_job(address, start(cluster, mlflow, str(runs), "calm"))
    assert [v for _, v, _ in history(mlflow.uri, "calm", "train/workers")] == [2.0]
    return runs / "calm"


def registered_step(run_dir: str) -> int:
    """The step of the latest checkpoint Ray Train registered in a run folder (0: none yet)."""
    from zv_ray.io import storage
    from zv_ray.model.checkpoint import RAY_TRAIN_SNAPSHOT

    snapshot = storage.join(run_dir, RAY_TRAIN_SNAPSHOT)
    if not storage.exists(snapshot):
        return 0
    latest = json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result") or {}
    return int(latest.get("metrics", {}).get("step", 0))


def weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir)["model"]


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_a_lost_trainer_node_shrinks_the_run_and_a_new_one_grows_it_back(cluster, mlflow, calm):
    address, _, nodes = cluster
    runs = calm.parent
    job = started_past(cluster, mlflow, str(runs), "elastic", 6)
    nodes["trainer_b"].kill()
    broken_at = time.time()
    wait_for(lambda: 1.0 in [v for _, v, _ in history(mlflow.uri, "elastic", "train/workers")], 300,
             "the run to go on with one worker")
    nodes["trainer_b"].start()
    wait_job(address, job, timeout_s=900)
    figures = report("SIGKILL a trainer node's raylet at step >= 6, the node back once training went on", broken_at,
                     mlflow, "elastic", runs / "elastic", calm, weights(runs / "elastic"))
    assert figures["workers"][:2] == [2.0, 1.0] and figures["workers"][-1] == 2.0, figures
    assert figures["audit_ok"] and figures["against_ok"] and figures["steps_compared"] == 24, figures
    assert figures["max_weight_difference"] < 1e-4, figures


def test_a_lost_render_node_stalls_the_stream_until_render_capacity_returns(cluster, mlflow, calm):
    address, _, nodes = cluster
    runs = calm.parent
    job = started_past(cluster, mlflow, str(runs), "render-lost", 6)
    nodes["render"].kill()
    broken_at = time.time()
    time.sleep(20)
    nodes["render"].start()
    wait_job(address, job, timeout_s=900)
    figures = report("SIGKILL the render node's raylet at step >= 6, back 20 s later", broken_at, mlflow,
                     "render-lost", runs / "render-lost", calm, weights(runs / "render-lost"))
    assert figures["audit_ok"] and figures["against_ok"] and figures["steps_compared"] == 24, figures
    assert figures["max_weight_difference"] < 1e-4, figures


def test_an_mlflow_server_restart_loses_no_step(cluster, mlflow, calm):
    address = cluster[0]
    runs = calm.parent
    job = started_past(cluster, mlflow, str(runs), "mlflow-down", 4)
    mlflow.stop()
    broken_at = time.time()
    time.sleep(30)
    mlflow.start()
    wait_job(address, job, timeout_s=900)
    figures = report("stop the MLflow server at step >= 4 for 30 s", broken_at, mlflow, "mlflow-down",
                     runs / "mlflow-down", calm, weights(runs / "mlflow-down"))
    from mlflow.tracking import MlflowClient

    run = MlflowClient(mlflow.uri).get_run(run_id(mlflow.uri, "mlflow-down"))
    assert run.info.status == "FINISHED" and "zv_ray.unsent_log_items" not in run.data.tags
    assert sorted({s for s, _, _ in history(mlflow.uri, "mlflow-down", "train/loss")}) == list(range(1, 25))
    assert figures["audit_ok"] and figures["against_ok"] and figures["max_weight_difference"] < 1e-4, figures


def test_an_s3_outage_during_a_checkpoint_upload_never_restores_a_partial_checkpoint(cluster, mlflow, calm, proxy, s3_server):
    address = cluster[0]
    bucket = f"s3://zv-test/chaos-{os.getpid()}"
    job = start(cluster, mlflow, bucket, "s3-down")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.items():
            mp.setenv(key, value)  # this process reads S3 directly, around the proxy
        # Ray Train registers a checkpoint (its record in the run folder) a little after the workers report it.
        wait_for(lambda: registered_step(f"{bucket}/s3-down") >= 4, 600, "the step-4 checkpoint registered")
    proxy.down()  # the step-8 checkpoint's upload, or its record, meets a dead endpoint
    broken_at = time.time()
    time.sleep(25)
    proxy.up()
    wait_job(address, job, timeout_s=900)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.items():
            mp.setenv(key, value)  # this process reads S3 directly, around the proxy
        final = load_checkpoint(f"{bucket}/s3-down")
    assert final["step"] == 24
    figures = report("S3 endpoint down for 25 s once the step-4 checkpoint was registered (the step-8 checkpoint's "
                     "upload and record)", broken_at, mlflow, "s3-down", None, calm, final["model"])
    # Restarted once storage read again, from a whole checkpoint Ray Train had registered: not from step 0.
    assert figures["restored_from"] and set(figures["restored_from"]) <= {4.0, 8.0, 12.0, 16.0, 20.0}, figures
    assert figures["max_weight_difference"] < 1e-4, figures
