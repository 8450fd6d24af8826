"""Shared test setup: headless GL, quiet Ray, paths to the shared evaluation objects, the one tiny run recipe,
and the small helpers several test files use (ports, waiting, jobs, MLflow histories)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
GSO_DIR = REPO.parent / "shared" / "eval" / "gso"
BIN = Path(sys.executable).parent  # the venv's console scripts: ray, zv-ray, mlflow, moto_server


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread avoids OpenMP spin-waits on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The one tiny run recipe, as `section.key=value` overrides: a 1-block, width-32 GS-LRM trained on 16 px views of
# coarse Zeroverse objects, 4 steps, a checkpoint every 2: seconds per run on a 2-core machine, the same code paths
# as a real run. A test that relies on a value sets just that one on top (later overrides win): tiny("train.steps=30").
TINY_RUN = [
    "zeroverse.mesh_resolution=8", "zeroverse.texture.resolution=32", "render.num_views=6", "render.resolution=32",
    "data.num_objects=2", "data.materialize=true", "data.num_val_objects=1", "data.num_generator_actors=1",
    "model.width=32", "model.depth=1", "model.num_heads=2", "loss.perceptual_weight=0",
    "train.resolution=16", "train.num_input_views=2", "train.num_target_views=2", "train.global_batch_size=2",
    "train.steps=4", "train.warmup_steps=1", "train.log_every=2", "train.checkpoint_every=2", "train.eval_every=4",
]


def tiny(*overrides: str) -> list[str]:
    """TINY_RUN with `overrides` on top: the list load_config(None, ...) takes."""
    return [*TINY_RUN, *overrides]


def as_set_args(overrides: Iterable[str]) -> list[str]:
    """["a.b=1", ...] -> ["--set", "a.b=1", ...]: the command line's (and `ray job submit`'s) form."""
    return [arg for kv in overrides for arg in ("--set", kv)]


def as_dict(overrides: Iterable[str]) -> dict[str, Any]:
    """["a.b=1", ...] -> {"a.b": 1, ...}, values parsed as the command line parses them (later keys win): the
    form of a sweep's `overrides`; zv_ray.config.base.set_keys({}, ...) nests it for RunConfig.model_validate."""
    from zv_ray.config.base import parse_override

    return dict(parse_override(kv) for kv in overrides)


# The tiny recipe as job arguments, for `zv-ray train configs/tiny.yaml ...` on a test cluster.
TINY_JOB = as_set_args(TINY_RUN)


def submit(address: str, env: dict, entrypoint: list[str]) -> str:
    """`ray job submit --no-wait` with the documented runtime env; returns the job id."""
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(REPO),
           "--runtime-env", str(REPO / "runtime_env.yaml"), "--no-wait", "--", *entrypoint]
    for _ in range(30):  # the head's job agent can take a few seconds after `ray start` to accept jobs
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode == 0:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return next(w.strip("'") for line in proc.stdout.splitlines() for w in line.split() if w.strip("'").startswith("raysubmit_"))


def wait_job(address: str, job_id: str, timeout_s: float = 600, succeed: bool = True) -> str:
    """Poll until the job ends; assert it succeeded (or failed, `succeed=False`); returns its logs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.time() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job_id} still {status}"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == (JobStatus.SUCCEEDED if succeed else JobStatus.FAILED), logs[-4000:]
    return logs


def submit_and_wait(address: str, env: dict, entrypoint: list[str], timeout_s: float = 600) -> str:
    """`ray job submit` with the documented runtime env, then poll until the job ends; returns its logs."""
    return wait_job(address, submit(address, env, entrypoint), timeout_s)


@pytest.fixture
def ray_shutdown_after():
    """Each test starts its own Ray (through the code under test) and leaves none behind."""
    yield
    import ray

    ray.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `predicate` until it is truthy; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1 with a sqlite store under `root`; a test may stop it and start it
    again on the same port and store, as an operator restarting the tracking server would."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db", "--artifacts-destination", str(self.root / "artifacts")],
            stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.uri}/health", timeout=120)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
            self.process = None


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one MLflow metric of one run, by step."""
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1, reached through the standard AWS
    environment, as a user's MinIO or S3 would be; yields that environment. Buckets: `zv-test` exists."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    try:
        wait_http(env["AWS_ENDPOINT_URL"])
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="zv-test")
        yield env
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This test sees the S3 server through AWS_ENDPOINT_URL and friends."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    return s3_server
