"""What `ray job submit --working-dir . --runtime-env runtime_env.yaml` uploads. The jobs themselves run in
tests/test_commands.py, against a 2-CPU head as a person starts it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import yaml

from conftest import REPO


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
