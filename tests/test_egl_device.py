"""Render processes on GPU nodes use the EGL device of the GPU Ray reserved for them, or none at all."""

from __future__ import annotations

import pytest

from zv_ray.render import gl
from zv_ray.render.egl_device import pick_egl_device, reserved_gpus


@pytest.mark.parametrize(
    ("visible", "expected"), [(None, None), ("", []), ("3", [3]), ("2,5", [2, 5]), ("GPU-8e1f", None)]
)
def test_reserved_gpus_read_ray_s_cuda_visible_devices(monkeypatch, visible, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert reserved_gpus() == expected


def test_the_reserved_gpu_picks_its_own_egl_device():
    # EGL enumerates in its own order; NVIDIA's driver names each device's CUDA ordinal.
    assert pick_egl_device([3], [2, 3, 0, 1]) == 1
    assert pick_egl_device([0], [None, None]) == 0  # no attribute: EGL order taken as CUDA order
    assert pick_egl_device([], [0, 1]) is None and pick_egl_device(None, [0, 1]) is None
    assert pick_egl_device([7], [0, 1]) is None


def test_a_process_without_a_gpu_reservation_renders_on_the_cpu(monkeypatch):
    monkeypatch.delenv("ZV_RAY_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(gl, "egl_is_hardware", lambda: True)  # as on a GPU node
    assert gl.resolve_backend("auto") == "osmesa"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gl.resolve_backend("auto") == "egl"


def test_an_egl_renderer_with_a_reserved_gpu_selects_a_device_and_renders():
    import os
    import subprocess
    import sys

    script = (
        "import trimesh; from zv_ray.render.cameras import ring_cameras; from zv_ray.render.renderer import Renderer\n"
        "k, c2w = ring_cameras(2, [20.0], 2.5, 50.0, 32)\n"
        "out = Renderer(32, backend='egl').render(trimesh.Scene(trimesh.creation.box()), k, c2w)\n"
        "import os; print(os.environ['EGL_DEVICE_ID'], int(out.alpha.max()))\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "PYOPENGL_PLATFORM": "egl"}
    env.pop("EGL_DEVICE_ID", None)
    env.pop("ZV_RAY_GL", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    device, alpha = proc.stdout.split()
    assert device == "0" and int(alpha) == 255
