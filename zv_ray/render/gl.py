"""Headless OpenGL platform choice: EGL on GPU nodes, OSMesa on CPU nodes.

PyOpenGL binds its platform once, at first import, from $PYOPENGL_PLATFORM; so the choice must be
made before anything imports pyrender or OpenGL, and it cannot change later in the same process.
Precedence: $ZV_RAY_GL=egl|osmesa, then RenderConfig.backend; under "auto" a $PYOPENGL_PLATFORM that is
already egl or osmesa is kept (the process's platform is chosen), else EGL is probed and used when its
context is hardware. Mesa's software EGL (llvmpipe) works too, ~15-30% slower than OSMesa on a CPU
(benchmarks/render.py), so "auto" takes OSMesa there. Both render the same pixels: the Renderer turns off
EGL's multisampling (OSMesa has none) and supersamples on both.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
from typing import Literal

from zv_ray.render.egl_device import reserved_gpus

Backend = Literal["egl", "osmesa"]
_BACKENDS: tuple[Backend, ...] = ("egl", "osmesa")

# A throwaway process tries EGL: a failed EGL import would pin this process to a broken platform.
_PROBE = (
    "import pyrender; from OpenGL.GL import glGetString, GL_RENDERER; r = pyrender.OffscreenRenderer(8, 8); "
    "print(glGetString(GL_RENDERER).decode()); r.delete()"
)
_SOFTWARE = ("llvmpipe", "softpipe", "swrast", "software")


@functools.cache
def egl_renderer() -> str | None:
    """The GL_RENDERER of an EGL context (e.g. 'NVIDIA H100 ...', 'llvmpipe ...'), or None without EGL."""
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    lines = probe.stdout.strip().splitlines()
    return lines[-1] if probe.returncode == 0 and lines else None


def egl_works() -> bool:
    return egl_renderer() is not None


def egl_is_hardware() -> bool:
    name = egl_renderer()
    return name is not None and not any(s in name.lower() for s in _SOFTWARE)


def resolve_backend(requested: str = "auto") -> Backend:
    """'auto' | 'egl' | 'osmesa', overridden by $ZV_RAY_GL -> the platform to use."""
    env = os.environ.get("ZV_RAY_GL")
    if env and env not in _BACKENDS:
        raise ValueError(f"ZV_RAY_GL={env!r} is not one of {', '.join(_BACKENDS)}")
    choice = env or requested
    if choice == "auto":
        preset = os.environ.get("PYOPENGL_PLATFORM")
        if preset in _BACKENDS:
            return preset  # type: ignore[return-value]
        if reserved_gpus() == []:  # a Ray task or actor that reserved no GPU: leave the node's GPUs to others
            return "osmesa"
        return "egl" if egl_is_hardware() else "osmesa"
    if choice not in _BACKENDS:
        raise ValueError(f"render backend {choice!r} is not one of auto, {', '.join(_BACKENDS)}")
    return choice  # type: ignore[return-value]


def key_osmesa_contexts_by_address() -> None:
    """Make PyOpenGL's OSMesa platform name the current context by its address, as its EGL platform does.

    It returns a fresh ctypes pointer object per call, which hashes by identity, so every cache keyed on
    the current context misses: pyrender's shader-program cache compiled (and kept) a new program per
    view, ~1.1 MB of JIT code each (13.7 MB per 12-view object, never freed) and a compile per view.
    Call after OpenGL is imported with PYOPENGL_PLATFORM=osmesa; idempotent."""
    from OpenGL import platform

    by_address = ctypes.CFUNCTYPE(ctypes.c_void_p)(("OSMesaGetCurrentContext", platform.PLATFORM.OSMesa))
    # contextdata reads the module-level name that PLATFORM.install copied: replace both.
    platform.GetCurrentContext = platform.PLATFORM.GetCurrentContext = by_address


def single_sample_framebuffers(pyrender_module) -> None:
    """pyrender's offscreen framebuffers (EGL) always multisample 4x, and OSMesa cannot: ask for 0 samples
    (a plain renderbuffer, as glRenderbufferStorage makes), so both platforms rasterize at pixel centres and
    the Renderer's supersampling is the one edge treatment everywhere. Idempotent; this process only."""
    from OpenGL.GL import glRenderbufferStorageMultisample

    def _no_samples(target, _samples, internal_format, width, height):
        glRenderbufferStorageMultisample(target, 0, internal_format, width, height)

    pyrender_module.renderer.glRenderbufferStorageMultisample = _no_samples


def activate(requested: str = "auto") -> Backend:
    """Pin this process's OpenGL platform (before pyrender is imported) and return it."""
    backend = resolve_backend(requested)
    bound = os.environ.get("PYOPENGL_PLATFORM")
    if "OpenGL" in sys.modules and bound != backend:
        raise RuntimeError(
            f"OpenGL was already imported with PYOPENGL_PLATFORM={bound!r}; cannot switch to {backend!r} in this "
            "process (create the Renderer before importing pyrender, or set ZV_RAY_GL to match)"
        )
    os.environ["PYOPENGL_PLATFORM"] = backend
    return backend
