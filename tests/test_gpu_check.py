"""scripts/gpu_check.py on the CPU: its plan fits the one device call with a minute to spare, the dry run passes
every step, and the background build falls back to the carried gsplat wheel and keeps the reason of each try."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from functools import cache

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


@cache
def load_gpu_check():
    """The script as a module (its parent half imports no torch)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def gpu_check(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_the_plan_fits_the_documented_device_call_with_a_minute_to_spare():
    check = load_gpu_check()
    doc = (REPO / "docs" / "gpu_check.md").read_text()
    budget = int(re.search(r"gpu_check\.py --out \$OUT --budget (\d+)", doc).group(1))
    timeout = int(re.search(r"`timeout_s` (\d+)", doc).group(1))
    assert budget + 45 <= timeout  # the debs and wheels install first, in well under 45 s
    plan = check.plan(list(check.STEPS), budget)
    assert plan["margin_s"] >= check.MIN_MARGIN_S == 60, plan
    # The build overlaps the steps that need no gsplat: the plan is shorter than the three parts one after another.
    assert plan["total_s"] == max(plan["build_s"], plan["beside_build_s"]) + plan["after_build_s"]
    assert plan["total_s"] < plan["build_s"] + plan["beside_build_s"] + plan["after_build_s"]
    order = list(check.STEPS.values())
    assert order[-1].name == "egl_render"  # a broken GL stack must not take the GPU figures with it
    assert all(s.after_build for s in order if s.needs_gsplat)
    assert [s.after_build for s in order] == sorted(s.after_build for s in order)  # beside the build, then after it


def test_a_plan_over_the_budget_is_refused_before_anything_runs(tmp_path):
    proc = gpu_check("--cpu-dry-run", "--out", str(tmp_path), "--budget", "300", timeout=60)
    assert proc.returncode == 2
    assert "under the 60 s margin" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "gpu_check.json").exists()


def test_the_rerun_line_names_what_failed_or_was_skipped_with_a_budget_that_fits(tmp_path):
    check = load_gpu_check()
    report = check.Report(tmp_path / "gpu_check.json", {})
    for name, status in (("environment", "ok"), ("paper_256", "ok"), ("paper_512", "failed"), ("egl_render", "skipped")):
        report.add({"step": name, "status": status})
    args = check.argparse.Namespace(out=tmp_path, cpu_dry_run=False, build_dir=check.DEFAULT_BUILD_DIR,
                                    fallback_wheels=check.FALLBACK_WHEELS)
    line = check.rerun_line(args, report)
    assert "--only paper_512,egl_render" in line
    budget = int(re.search(r"--budget (\d+)", line).group(1))
    assert check.plan(["paper_512", "egl_render"], budget)["margin_s"] >= check.MIN_MARGIN_S


def fake_gsplat_wheel(folder, version: str):
    """A real, installable wheel named gsplat `version` whose package is empty: what the build's version checks
    and the fallback's install read, without gsplat's CUDA sources."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gsplat-{version}-py3-none-any.whl"
    info = f"gsplat-{version}.dist-info"
    files = {"gsplat/__init__.py": f"__version__ = '{version}'\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: gsplat\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(text)},{len(text.encode())}\n" for name, text in files.items())
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, f"{info}/RECORD": record + f"{info}/RECORD,,\n"}.items():
            wheel.writestr(name, text)
    return path


def test_a_failed_build_falls_back_to_the_carried_wheel_installed_ahead_of_the_first(tmp_path):
    # The installed gsplat is 1.5.2 (refused by its version), the carried fallback 1.6.0 (accepted; then this CPU
    # torch stops it): each try's own reason shows that the fallback's build saw 1.6.0, not the first one.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(fake_gsplat_wheel(tmp_path / "wheels", "1.5.2"))], check=True, timeout=120)
    fake_gsplat_wheel(tmp_path / "fallback", "1.6.0")
    out = tmp_path / "out"
    proc = gpu_check("--cpu-dry-run", "--out", str(out), "--only", "gsplat_agreement", "--build-dir", str(tmp_path / "build"),
                     "--fallback-wheels", str(tmp_path / "fallback"), env={"PYTHONPATH": f"{REPO}:{site}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = {r["step"]: r for r in json.loads((out / "gpu_check.json").read_text())["steps"]}
    tries = steps["gsplat_build"]["attempts"]
    assert [t["gsplat"] for t in tries] == ["1.5.2", "1.6.0"] and all(t["status"] == "failed" for t in tries)
    assert "1.5.2 is outside the supported range" in tries[0]["log_tail"][-1]
    assert "CPU build" in tries[1]["log_tail"][-1]
    assert steps["gsplat_build"]["status"] == "skipped" and steps["gsplat_agreement"]["status"] == "ok"
    log = (out / "gsplat_build.log").read_text()
    assert "=== gsplat 1.5.2" in log and "=== gsplat 1.6.0 (fallback wheel" in log


def test_the_cpu_dry_run_passes_every_step_beside_and_after_the_build(tmp_path):
    proc = gpu_check("--cpu-dry-run", "--out", str(tmp_path), "--build-dir", str(tmp_path / "build"),
                     "--fallback-wheels", str(tmp_path / "none"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    check = load_gpu_check()
    statuses = {r["step"]: r["status"] for r in data["steps"]}
    assert all(statuses[name] == "ok" for name in check.STEPS), statuses
    assert statuses["gsplat_build"] == "skipped"  # no CUDA here: it ran and stopped, as the record says
    assert data["meta"]["plan"]["margin_s"] >= 60
    figures = next(r for r in data["steps"] if r["step"] == "paper_256")
    for variant in ("initial_gaussians", "small_gaussians"):
        timed = figures[variant]["timed_steps"]
        assert timed and all(s["perceptual"] for s in timed)  # the loop's steady state: past lr warm-up, LPIPS on
        assert figures[variant]["warmup_steps"][0]["step"] == 0
    assert "rerun: nothing failed or was skipped" in proc.stdout
