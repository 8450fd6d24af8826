"""The README's cluster path on this machine: a real Ray head, `ray job submit` of training and dataset jobs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml


pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
TINY_JOB = [
    "--set", "zeroverse.mesh_resolution=8", "--set", "zeroverse.texture.resolution=32",
    "--set", "render.num_views=6", "--set", "render.resolution=32", "--set", "data.num_objects=2", "--set", "data.materialize=true",
    "--set", "data.num_val_objects=1", "--set", "model.width=32", "--set", "model.depth=1", "--set", "model.num_heads=2",
    "--set", "train.resolution=16", "--set", "train.num_input_views=2", "--set", "train.num_target_views=2",
    "--set", "train.batch_size_per_worker=2", "--set", "train.steps=4", "--set", "train.warmup_steps=1",
    "--set", "train.log_every=2", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=4",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` bound to loopback, as the README's cluster section does; stopped afterwards."""
    temp_dir = Path(f"/tmp/zvray-head-{os.getpid()}")  # short: Ray's socket paths have a length limit
    gcs_port, dash_port = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    start = [
        str(BIN / "ray"), "start", "--head", "--num-cpus=4", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    address = f"http://127.0.0.1:{dash_port}"
    try:
        yield address, env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_and_wait(address: str, env: dict, entrypoint: list[str], timeout_s: float = 600) -> str:
    """`ray job submit --no-wait` with the documented runtime env, then poll until the job ends."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(REPO),
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


def working_dir_package(working_dir: Path, out: Path) -> list[str]:
    """The files of the zip `ray job submit --working-dir <dir> --runtime-env runtime_env.yaml` uploads, built by
    Ray's own packaging code."""
    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"  # as the job client decides
    runtime_env = {**yaml.safe_load((REPO / "runtime_env.yaml").read_text()), "working_dir": str(working_dir)}
    seen: dict = {}
    upload_working_dir_if_needed(runtime_env, include_gitignore=include_gitignore,
                                 upload_fn=lambda path, excludes, is_file=False: seen.update(excludes=excludes))
    create_package(str(working_dir), out, include_gitignore=include_gitignore, excludes=seen["excludes"])
    with zipfile.ZipFile(out) as package:
        return [name for name in package.namelist() if not name.endswith("/")]


UPLOAD_LIMIT = 100 * 2**20  # the documented working_dir limit (Ray 2.60 itself refuses from 512 MiB)
KEEP = ["pyproject.toml", "runtime_env.yaml", "configs/tiny.yaml", "actors/render.py", "zv_ray/__init__.py"]
# Where a checkout grows: git history, the venv, run outputs, MLflow stores, caches, the vendored wheels and GL libs.
BULK = [".git/objects/pack/pack-0.pack", ".venv/lib/libtorch_cpu.so", "outputs/runs/tiny/checkpoint_000600/checkpoint.pt",
        "mlruns/0/1/artifacts/grid.png", "mlflow.db", "zv_ray/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v/cache",
        ".whl/torch.whl", ".gl/libEGL.so"]


def test_runtime_env_keeps_the_upload_small(tmp_path, monkeypatch):
    """On a checkout where every place that grows holds a file over the limit, none of them is uploaded; this
    checkout's upload is under the limit and holds what a job runs. Neither .gitignore (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1
    drops it) nor Ray's own default excludes (RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES) count: runtime_env.yaml
    alone must keep the upload small."""
    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    checkout = tmp_path / "checkout"
    for rel in KEEP + BULK:
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(checkout / rel, "wb") as f:
            f.truncate(UPLOAD_LIMIT if rel in BULK else 1)  # sparse: no disk used unless it is packed
    assert sorted(working_dir_package(checkout, tmp_path / "checkout.zip")) == sorted(KEEP)

    files = working_dir_package(REPO, tmp_path / "repo.zip")  # after the planted check: a failure never packs .venv
    assert (tmp_path / "repo.zip").stat().st_size < UPLOAD_LIMIT
    assert set(KEEP) <= set(files)
    assert not [f for f in files if f.split("/")[0] in {".git", ".venv", "outputs", "mlruns"} or f.endswith(".db")]


def test_training_job_through_ray_job_submit(ray_head, tmp_path):
    from mlflow.tracking import MlflowClient

    from zv_ray.model.checkpoint import load_checkpoint

    address, env = ray_head
    logs = submit_and_wait(address, env, ["zv-ray", "train", "configs/tiny.yaml", *TINY_JOB,
                                          "--set", f"cluster.storage_path={tmp_path}", "--set", "cluster.run_name=job"])
    assert "training finished" in logs
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("zv-ray-tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert "train/loss" in runs[0].data.metrics
    assert load_checkpoint(tmp_path / "job")["step"] == 4


def test_dataset_job_through_ray_job_submit(ray_head, tmp_path):
    from zv_ray.data.parquet import read_shards

    address, env = ray_head
    out = tmp_path / "shards"
    submit_and_wait(address, env, ["zv-ray", "dataset", "--n", "3", "--out", str(out), "--views", "4", "--res", "32",
                                   "--set", "zeroverse.mesh_resolution=8", "--no-contact-sheet"])
    records = list(read_shards(out))
    assert sorted(r["object_id"] for r in records) == [0, 1, 2]
    assert all(r["rgba"].shape == (4, 32, 32, 4) for r in records)
