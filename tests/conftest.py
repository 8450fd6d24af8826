"""Shared test setup: headless GL, quiet Ray, and paths to the shared evaluation objects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
GSO_DIR = REPO.parent / "shared" / "eval" / "gso"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread avoids OpenMP spin-waits on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The tiny recipe made tinier for jobs on a test cluster: seconds per run, the same code paths.
TINY_JOB = [
    "--set", "zeroverse.mesh_resolution=8", "--set", "zeroverse.texture.resolution=32",
    "--set", "render.num_views=6", "--set", "render.resolution=32", "--set", "data.num_objects=2", "--set", "data.materialize=true",
    "--set", "data.num_val_objects=1", "--set", "model.width=32", "--set", "model.depth=1", "--set", "model.num_heads=2",
    "--set", "train.resolution=16", "--set", "train.num_input_views=2", "--set", "train.num_target_views=2",
    "--set", "train.batch_size_per_worker=2", "--set", "train.steps=4", "--set", "train.warmup_steps=1",
    "--set", "train.log_every=2", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=4",
]


def submit_and_wait(address: str, env: dict, entrypoint: list[str], timeout_s: float = 600) -> str:
    """`ray job submit --no-wait` with the documented runtime env, then poll until the job ends."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(REPO),
           "--runtime-env", str(REPO / "runtime_env.yaml"), "--no-wait", "--", *entrypoint]
    for _ in range(30):  # the head's job agent can take a few seconds after `ray start` to accept jobs
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode == 0:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    job_id = next(w.strip("'") for line in out.splitlines() for w in line.split() if w.strip("'").startswith("raysubmit_"))
    client = JobSubmissionClient(address)
    deadline = time.time() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job_id} still {status}"
        time.sleep(2)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-4000:]
    return client.get_job_logs(job_id)



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


def wait_http(url: str, timeout: float = 60.0) -> None:
    import time
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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1, reached through the standard AWS
    environment, as a user's MinIO or S3 would be; yields that environment. Buckets: `zv-test` exists."""
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
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
