"""`zv-ray doctor` and the checks `train` runs first: they pass on this machine and name what fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from zv_ray.cluster.doctor import multi_host_checks
from zv_ray.splat import backend
from zv_ray.splat.backend import RasterizerUnavailable
from zv_ray.splat.rasterize import pick_rasterizer
from zv_ray.splat import torch_rasterizer


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zv_ray.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=180, cwd=REPO, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_doctor_passes_for_the_tiny_config(tmp_path):
    proc = doctor("--config", "configs/tiny.yaml", "--set", f"cluster.storage_path={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in ("python", "torch", "gsplat", "GL", "VGG weights", "MLflow", "storage"):
        assert row in proc.stdout
    assert "FAIL" not in proc.stdout and "all checks passed" in proc.stdout


def test_doctor_fails_naming_the_storage_for_an_unwritable_bucket(s3_env, tmp_path):
    proc = doctor("--config", "configs/tiny.yaml", "--set", "cluster.storage_path=s3://no-such-bucket/runs",
                  "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", env=s3_env)
    assert proc.returncode == 1
    failing = [line for line in proc.stdout.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and "storage" in failing[0] and "no-such-bucket" in proc.stdout
    assert "driver storage" in proc.stdout.splitlines()[-1]


def test_several_hosts_refuse_loopback_mlflow_sqlite_and_local_storage():
    one_host = multi_host_checks("http://127.0.0.1:5000", "/tmp/runs", {"10.0.0.1"})
    assert all(c.ok for c in one_host)
    bad = {c.name: c for c in multi_host_checks("http://127.0.0.1:5000", "/tmp/runs", {"10.0.0.1", "10.0.0.2"})}
    assert not bad["MLflow (cluster)"].ok and "mlflow server" in bad["MLflow (cluster)"].fix
    assert not bad["storage (cluster)"].ok and "s3://" in bad["storage (cluster)"].fix
    assert not multi_host_checks("sqlite:////tmp/m.db", "s3://b/r", {"a", "b"})[0].ok
    assert all(c.ok for c in multi_host_checks("http://mlflow.internal:5000", "s3://b/r", {"a", "b"}))


def test_cuda_without_gsplat_is_refused_unless_torch_is_asked_for():
    cuda = torch.device("cuda")  # a device object needs no GPU: the choice is made before any kernel runs
    with pytest.raises(RasterizerUnavailable, match="model.rasterizer=torch"):
        pick_rasterizer("auto", cuda)
    assert pick_rasterizer("torch", cuda) is torch_rasterizer.rasterization
    assert pick_rasterizer("auto", torch.device("cpu")) is torch_rasterizer.rasterization
    with pytest.raises(RasterizerUnavailable, match="needs CUDA"):
        pick_rasterizer("gsplat", torch.device("cpu"))


def test_gsplat_versions_outside_the_working_range_are_named(monkeypatch):
    from packaging.version import Version

    monkeypatch.setattr(backend, "gsplat_version", lambda: Version("1.5.2"))
    assert ">=1.5.3,<1.7" in backend.toolchain_problem()
    monkeypatch.setattr(backend, "gsplat_version", lambda: None)
    assert "not installed" in backend.toolchain_problem()
    for accepted in ("1.5.3", "1.6.0"):  # 1.6.0 is the fallback when 1.5.3 does not build with CUDA 13
        monkeypatch.setattr(backend, "gsplat_version", lambda: Version(accepted))
        assert backend.gsplat_problem() is None
        if torch.version.cuda is None:
            assert "CPU build" in backend.toolchain_problem()


def fake_nvcc(folder, release: str):
    """A real executable that answers --version as nvcc <release> does."""
    folder.mkdir(parents=True)
    nvcc = folder / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.88'\n")
    nvcc.chmod(0o755)
    return nvcc


def test_doctor_names_an_nvcc_of_another_cuda_major_and_the_toolkit_that_fixes_it(tmp_path):
    from zv_ray.cluster.doctor import check_cuda_compiler
    from zv_ray.splat.backend import find_nvcc

    image_cuda12 = fake_nvcc(tmp_path / "image" / "bin", "12.8")
    found = find_nvcc(str(tmp_path / "image"), path="")  # CUDA_HOME/bin/nvcc first
    assert found == str(image_cuda12)
    mismatch = check_cuda_compiler("13.0", found)
    assert not mismatch.ok and "CUDA 12.8" in mismatch.detail and "CUDA 13.0" in mismatch.detail
    assert "cuda-toolkit[nvcc,cccl]==13.0.*" in mismatch.fix and "CUDA_HOME" in mismatch.fix

    cuda13 = fake_nvcc(tmp_path / "toolkit" / "bin", "13.0")
    on_path = find_nvcc(str(tmp_path / "no-such-home"), path=f"{tmp_path / 'empty'}:{cuda13.parent}")  # then PATH
    assert on_path == str(cuda13)
    match = check_cuda_compiler("13.0", on_path)
    assert match.ok and "CUDA 13.0" in match.detail

    missing = check_cuda_compiler("13.0", find_nvcc(None, path=str(tmp_path / "empty")))
    assert not missing.ok and "no nvcc" in missing.detail
    # Before CUDA 13 PyPI has no toolkit CUDA_HOME can name: the fix is an image with the right toolkit.
    old = check_cuda_compiler("12.8", str(cuda13))
    assert not old.ok and "image whose CUDA toolkit is 12.x" in old.fix
    assert check_cuda_compiler(None, None).ok  # a CPU torch: the torch row speaks for it

    from rich.console import Console

    from zv_ray.cluster.doctor import checks_table

    console = Console(width=400, record=True)
    console.print(checks_table([mismatch]))
    assert "cuda-toolkit[nvcc,cccl]==13.0.*" in console.export_text()  # the table prints pip extras, not markup
