"""The commands as a person types them: the installed `zv-ray` entry point in a subprocess, on a terminal (a pty, so
rich draws its live displays), in a fresh folder, one after another the way the README chains them; then the
README's cluster path against the cluster a person has: `ray start --head --num-cpus=2`.

Library-level tests missed two of these: the sweep crashed as typed (Tune pickled the CLI's console) and a job
hung on a 2-CPU head. Each command's time is printed (`pytest -s`) for the closing notes.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, GSO_DIR, REPO, as_set_args, free_port, tiny
from test_reconstruct import posed_views  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(900)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")
# The tiny recipe made tinier (conftest), with the 4 inputs `zv-ray reconstruct` gives it.
SETS = as_set_args(tiny("train.num_input_views=4", "train.image_every=4"))
TIMES: dict[str, float] = {}


def user_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **extra}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST"):
        if key not in extra:
            env.pop(key, None)
    return env


class Typed:
    """One command on a pseudo-terminal: its output as the person sees it (escape codes stripped)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.label = " ".join(args)
        master, slave = pty.openpty()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.master, self.raw = master, b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def _read(self, wait_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the terminal's other end closed
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.text):
            assert time.monotonic() < deadline and self._read(1.0), f"no {pattern!r} from {self.label}:\n{self.text[-3000:]}"

    def wait(self, timeout_s: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while self._read(0.5) and time.monotonic() < deadline:
            pass
        try:
            rc = self.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"{self.label} still running after {timeout_s:.0f} s:\n{self.text[-3000:]}")
        while self._read(0.1):
            pass
        os.close(self.master)
        TIMES[self.label] = time.monotonic() - self.started
        print(f"\n[{TIMES[self.label]:6.1f} s] {self.label}")
        return rc, self.text


def typed(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 600) -> tuple[int, str]:
    return Typed([str(BIN / "zv-ray"), *args] if args[0] != "ray" else [str(BIN / "ray"), *args[1:]], cwd,
                 env or user_env()).wait(timeout_s)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A fresh folder with the repo's configs, as after `git clone`; outputs land here."""
    root = tmp_path_factory.mktemp("user")
    (root / "configs").symlink_to(REPO / "configs")
    return root


@pytest.fixture(scope="module")
def trained(home) -> Path:
    rc, out = typed(["train", "configs/tiny.yaml", *SETS, "--set", "cluster.run_name=cli"], home)
    assert rc == 0, out[-3000:]
    assert "training finished 4 steps" in out and "Gaussians (.ply)" in out
    return home / "outputs/runs/cli"


def test_generate(home):
    rc, out = typed(["generate", "--n", "2", "--out", "outputs/objects"], home)
    assert rc == 0, out[-2000:]
    assert "wrote 2 objects" in out
    assert len(list((home / "outputs/objects").glob("*.glb"))) == 2


def test_dataset(home):
    rc, out = typed(["dataset", "--n", "2", "--out", "outputs/dataset", "--views", "4", "--res", "32",
                     "--set", "zeroverse.mesh_resolution=8", "--set", "data.num_generator_actors=1"], home)
    assert rc == 0, out[-2000:]
    assert "done 2 objects, 8 views" in out
    assert (home / "outputs/dataset/dataset.json").is_file()


def test_train(trained):
    from zv_ray.model.checkpoint import load_checkpoint

    assert load_checkpoint(trained)["step"] == 4
    assert (trained / "gaussians.ply").is_file()


def test_train_refuses_a_config_local_ray_cannot_place(home):
    started = time.monotonic()
    rc, out = typed(["train", "configs/tiny.yaml", *SETS, "--set", "cluster.run_name=toobig",
                     "--set", "data.num_generator_actors=6"], home)
    assert rc == 2, out[-2000:]
    assert "error: this config needs 6 CPU at once (6 generator actors x 1) but local Ray has 4" in " ".join(out.split())
    assert "--set data.num_generator_actors=4" in out
    assert time.monotonic() - started < 30
    assert not (home / "outputs/runs/toobig").exists()


def sweep_file(home: Path, name: str) -> Path:
    """configs/sweeps/augmentation_tiny.yaml with two arms and four steps: the same command, a shorter sweep."""
    sweep = yaml.safe_load((REPO / "configs/sweeps/augmentation_tiny.yaml").read_text())
    sweep["name"] = name
    values = sweep["space"]["augmentation"]["values"]
    sweep["space"]["augmentation"]["values"] = {k: values[k] for k in ("none", "all")}
    sweep["overrides"].update({"data.num_objects": 2, "train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2,
                               "train.eval_objects": str(GSO_DIR)})  # ../shared from a clone; this home is elsewhere
    sweep["scheduler"] = {"type": "fifo"}
    sweep["seeds"] = 1  # two trials: one to finish before the Ctrl-C, one after it
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_interrupted_then_resumed_then_compared(home):
    from mlflow.tracking import MlflowClient

    from zv_ray.tracking import OUTCOME_TAG, ROLE_TAG

    path = sweep_file(home, "sweep-cli")
    sweep = Typed([str(BIN / "zv-ray"), "sweep", path.name], home, user_env())
    sweep.expect(r"trial 1/2 \S+ completed at step 4", 300)
    sweep.proc.send_signal(signal.SIGINT)  # Ctrl-C
    rc, out = sweep.wait(300)
    assert rc == 130, out[-3000:]
    assert f"sweep interrupted: finish it with  zv-ray sweep {path.name} --resume" in out
    assert "cannot pickle" not in out

    rc, out = typed(["sweep", path.name, "--resume"], home)
    assert rc == 0, out[-3000:]
    assert "sweep finished 2 trials" in out
    store = f"sqlite:///{home / 'outputs/runs/mlflow.db'}"
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("zv-ray").experiment_id],
                              f"tags.`{ROLE_TAG}` = 'trial'")
    assert sorted(r.data.tags.get(OUTCOME_TAG) for r in runs) == ["completed", "completed"]

    rc, out = typed(["compare", "sweep-cli", "--tracking-uri", store], home)
    assert rc == 0, out[-2000:]
    assert "written and logged to the parent run" in out
    assert (home / "outputs/compare/sweep-cli/table.txt").is_file()


@pytest.mark.skipif(not GSO_DIR.is_dir(), reason="shared GSO objects not found")
def test_eval(home, trained):
    rc, out = typed(["eval", "--checkpoint", str(trained), "--objects", str(GSO_DIR), "--max-objects", "1",
                     "--test-views", "2", "--device", "cpu", "--out", "outputs/eval"], home)
    assert rc == 0, out[-2000:]
    assert "white" in out and "results:" in out
    assert (home / "outputs/eval/results.json").is_file()


def test_reconstruct(home, trained, posed_views):  # noqa: F811 - the imported fixture
    images, cameras = posed_views
    rc, out = typed(["reconstruct", *images, "--cameras", cameras, "--checkpoint", str(trained),
                     "--out", "outputs/recon", "--frames", "4", "--device", "cpu"], home)
    assert rc == 0, out[-2000:]
    assert (home / "outputs/recon/gaussians.ply").is_file() and (home / "outputs/recon/turntable.mp4").is_file()


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="Chromium not installed (bash scripts/setup_browser.sh)")
def test_view_screenshot(home, trained):
    rc, out = typed(["view", str(trained / "gaussians.ply"), "--screenshot", "outputs/view.png", "--port", "0"], home)
    assert rc == 0, out[-2000:]
    from PIL import Image

    with Image.open(home / "outputs/view.png") as shot:
        assert shot.size[0] >= 320 and shot.size[1] >= 240


def test_doctor(home):
    rc, out = typed(["doctor", "--config", "configs/tiny.yaml"], home)
    assert rc == 0, out[-2000:]
    assert "all checks passed" in out and "a training run fits the local Ray" in " ".join(out.split())


# --- the README's cluster path, on the cluster a person has: one 2-CPU head ----------------------------------


@pytest.fixture(scope="module")
def small_head(home):
    """`ray start --head --num-cpus=2` on loopback; stopped afterwards."""
    temp_dir = Path(f"/tmp/zvray-cmd-{os.getpid()}")  # short: Ray's socket paths have a length limit
    gcs_port, dash_port = free_port(), free_port()
    env = user_env()
    start = [str(BIN / "ray"), "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", f"--temp-dir={temp_dir}",
             "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash_port}", f"127.0.0.1:{gcs_port}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(address: str, env: dict, entrypoint: list[str], timeout_s: float = 600) -> tuple[str, str]:
    """`ray job submit` as the README shows it (it waits and streams the job's output); (status, logs)."""
    from ray.job_submission import JobSubmissionClient

    cmd = ["ray", "job", "submit", f"--address={address}", "--working-dir", str(REPO), "--runtime-env",
           str(REPO / "runtime_env.yaml"), "--", *entrypoint]
    for _ in range(30):  # the head's job agent can take a few seconds after `ray start` to accept jobs
        rc, out = typed(cmd, REPO, env, timeout_s)
        if "raysubmit_" in out:
            break
        time.sleep(2)
    job_id = re.search(r"raysubmit_\w+", out).group(0)
    client = JobSubmissionClient(address)
    return str(client.get_job_status(job_id)), client.get_job_logs(job_id)


def test_training_job_finishes_on_a_two_cpu_head(small_head, tmp_path):
    from mlflow.tracking import MlflowClient

    from zv_ray.model.checkpoint import load_checkpoint

    address, _, env = small_head
    status, logs = submit(address, env, ["zv-ray", "train", "configs/tiny.yaml", *SETS, "--set", "data.materialize=true",
                                         "--set", f"cluster.storage_path={tmp_path}", "--set", "cluster.run_name=job"])
    assert status == "SUCCEEDED", logs[-4000:]
    assert "training finished" in logs
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("zv-ray-tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert load_checkpoint(tmp_path / "job")["step"] == 4


def test_dataset_job_on_a_two_cpu_head(small_head, tmp_path):
    from zv_ray.data.parquet import read_shards

    address, _, env = small_head
    out = tmp_path / "shards"
    status, logs = submit(address, env, ["zv-ray", "dataset", "--n", "3", "--out", str(out), "--views", "4", "--res",
                                         "32", "--set", "zeroverse.mesh_resolution=8", "--set",
                                         "data.num_generator_actors=1", "--no-contact-sheet"])
    assert status == "SUCCEEDED", logs[-4000:]
    records = list(read_shards(out))
    assert sorted(r["object_id"] for r in records) == [0, 1, 2]
    assert all(r["rgba"].shape == (4, 32, 32, 4) for r in records)


def test_a_config_the_head_cannot_place_fails_in_seconds(small_head, home):
    _, gcs, env = small_head
    # A driver on the head node, as `ray job submit` runs it (RAY_ADDRESS is the head's GCS there too).
    started = time.monotonic()
    rc, out = typed(["train", "configs/tiny.yaml", *SETS, "--set", "data.num_generator_actors=3",
                     "--set", "cluster.run_name=toobig-head"], home, user_env(RAY_ADDRESS=gcs))
    seconds = time.monotonic() - started
    flat = " ".join(out.split())
    assert rc == 2, out[-2000:]
    assert "this config needs 3 CPU at once (3 generator actors x 1) but the cluster has 2" in flat
    assert "--set data.num_generator_actors=2" in flat
    assert seconds < 10, f"took {seconds:.1f} s"


def test_doctor_names_the_node_types_a_small_cluster_lacks(small_head):
    address, _, env = small_head
    started = time.monotonic()
    status, logs = submit(address, env, ["zv-ray", "doctor", "--config", "configs/paper.yaml", "--cluster",
                                         "--set", "cluster.storage_path=/tmp/zvray-doctor",
                                         "--set", "mlflow.tracking_uri=sqlite:////tmp/zvray-doctor/mlflow.db"], 300)
    assert status == "FAILED", logs[-3000:]
    # Rows as failed rows, not a wait for --timeout (600 s): the table folds long cells, the summary line does not.
    summary = next(line for line in logs.splitlines() if "check(s) failed:" in line)
    assert "driver resources, trainer schedule, render schedule" in summary
    assert "no trainer node" in logs and "no render node" in logs and "can hold" in logs
    assert time.monotonic() - started < 120


def test_times_of_the_commands():
    """The closing notes' table: every command above with its time (printed with -s)."""
    assert TIMES, "no command ran"
    for label, seconds in TIMES.items():
        print(f"{seconds:7.1f} s  {label}")
