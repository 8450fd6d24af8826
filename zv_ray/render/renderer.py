"""Headless multi-view rendering of a textured trimesh scene with pyrender.

One Renderer owns one OffscreenRenderer (one GL context) and reuses it across objects: creating a
context and compiling shaders costs far more than a view; pyrender frees the previous scene's GPU
buffers when the next scene renders. One edge treatment on every GL platform: no multisampling (OSMesa
has none; EGL's is turned off), each view rendered at `supersample` x the resolution per axis, then every
s x s block averaged: RGB composited on white, and alpha as the fraction of the block's samples that hit
a surface (depth > 0; OSMesa reads back RGB only). Sample centres average to the pixel centre.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import trimesh

from zv_ray.config.render import RenderConfig
from zv_ray.render import gl
from zv_ray.render.cameras import opencv_to_opengl
from zv_ray.render.egl_device import select_egl_device

# Clip planes around cameras 1.5..2.8 from an object inside about [-1, 1]^3.
_ZNEAR, _ZFAR = 0.05, 20.0
# "lit": ambient fill plus a head light, so every visible face is lit without harsh shadows.
_LIT_AMBIENT, _LIT_HEADLIGHT = 0.35, 2.0


@dataclass
class RenderResult:
    rgb: np.ndarray  # [V, H, W, 3] uint8, composited on white
    alpha: np.ndarray  # [V, H, W] uint8 pixel coverage (covered samples / s^2)
    depth: np.ndarray | None  # [V, H, W] float32 mean camera z of the covered samples (0 on background), when requested


def block_mean(images: np.ndarray, s: int) -> np.ndarray:  # [..., s*H, s*W, C] -> [..., H, W, C] float32
    """Average every s x s block: a box filter over each output pixel's footprint."""
    *lead, h, w, c = images.shape
    blocks = images.reshape(*lead, h // s, s, w // s, s, c)
    return blocks.mean(axis=(-4, -2), dtype=np.float32)


class Renderer:
    """Renders views of trimesh scenes through OpenCV cameras, reusing one GL context."""

    def __init__(
        self,
        resolution: int,
        backend: Literal["auto", "egl", "osmesa"] = "auto",
        shading: Literal["flat", "lit"] = "flat",
        depth: bool = False,
        supersample: int = 2,
    ) -> None:
        if shading not in ("flat", "lit"):
            raise ValueError(f"shading must be 'flat' or 'lit', got {shading!r}")
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, got {supersample}")
        self.backend = gl.activate(backend)
        import pyrender  # after gl.activate: PyOpenGL binds its platform at import

        if self.backend == "osmesa":
            gl.key_osmesa_contexts_by_address()
        else:
            gl.single_sample_framebuffers(pyrender)

        self._pyrender = pyrender
        self.resolution = resolution
        self.shading = shading
        self.depth = depth
        self.supersample = supersample
        # RGB only: coverage comes from depth on every platform (OSMesa cannot read back alpha).
        self._flags = pyrender.RenderFlags.FLAT if shading == "flat" else pyrender.RenderFlags.NONE
        # A GL context belongs to the thread that made it current, and Ray Data constructs a callable
        # class on one thread but calls it on another: so the context is made by the first render.
        self._gl: Any = None
        self._thread: int | None = None

    @classmethod
    def from_config(cls, cfg: RenderConfig, resolution: int | None = None) -> "Renderer":
        """A renderer for `cfg`, at `resolution` instead of cfg.resolution when given (the training stream's)."""
        size = resolution or cfg.resolution
        return cls(size, backend=cfg.backend, shading=cfg.shading, depth=cfg.depth, supersample=cfg.supersample)

    def render(
        self,
        scene: trimesh.Scene,
        intrinsics: np.ndarray,  # [V, 4] fx, fy, cx, cy
        c2w: np.ndarray,  # [V, 4, 4] OpenCV camera-to-world
    ) -> RenderResult:
        pr = self._pyrender
        if len(intrinsics) != len(c2w):
            raise ValueError(f"got {len(intrinsics)} intrinsics but {len(c2w)} poses")
        s = self.supersample
        if self._gl is None:
            if self.backend == "egl":
                select_egl_device()  # the GPU Ray reserved for this process, not every actor on device 0
            self._gl = pr.OffscreenRenderer(self.resolution * s, self.resolution * s)
            self._thread = threading.get_ident()
        elif self._thread != threading.get_ident():
            raise RuntimeError("Renderer.render called from another thread than its first render (GL is per thread)")
        ambient = np.full(3, _LIT_AMBIENT if self.shading == "lit" else 0.0)
        pr_scene = pr.Scene.from_trimesh_scene(scene, bg_color=np.array([1.0, 1.0, 1.0, 0.0]), ambient_light=ambient)
        for mesh in pr_scene.meshes:
            for prim in mesh.primitives:
                # Like Blender: open surfaces (boolean cuts, thin walls) show their back faces.
                prim.material.doubleSided = True
        camera = pr.IntrinsicsCamera(*intrinsics[0], znear=_ZNEAR, zfar=_ZFAR)
        cam_node = pr_scene.add(camera)
        if self.shading == "lit":
            pr_scene.add(pr.DirectionalLight(color=np.ones(3), intensity=_LIT_HEADLIGHT), parent_node=cam_node)

        size = self.resolution
        views = len(c2w)
        rgb = np.empty((views, size, size, 3), dtype=np.uint8)
        alpha = np.empty((views, size, size), dtype=np.uint8)
        depth = np.empty((views, size, size), dtype=np.float32) if self.depth else None
        poses = opencv_to_opengl(np.asarray(c2w, dtype=np.float64))
        # Pixel coordinates scale with the image (centres at +0.5 in both): the supersampled camera is K * s.
        fine = np.asarray(intrinsics, dtype=np.float64) * s
        for i in range(views):
            camera.fx, camera.fy, camera.cx, camera.cy = (float(x) for x in fine[i])
            pr_scene.set_pose(cam_node, poses[i])
            color, z = self._gl.render(pr_scene, flags=self._flags)  # [sH, sW, 3] uint8, [sH, sW] float32
            hit = (z > 0)[..., None]  # [sH, sW, 1]
            rgb[i] = np.round(block_mean(color, s))
            cover = block_mean(hit, s)[..., 0]  # [H, W] in [0, 1]
            alpha[i] = np.round(cover * 255.0)
            if depth is not None:
                z_sum = block_mean(z[..., None], s)[..., 0]
                depth[i] = np.divide(z_sum, cover, out=np.zeros_like(z_sum), where=cover > 0)
        return RenderResult(rgb=rgb, alpha=alpha, depth=depth)

    def close(self) -> None:
        if self._gl is None:
            return
        if self.backend == "egl":
            # pyrender's delete() also calls eglTerminate on the display that every context in the process
            # shares, which breaks any other live Renderer: free only this one's GL objects and context.
            from OpenGL.EGL import EGL_NO_CONTEXT, EGL_NO_SURFACE, eglDestroyContext, eglMakeCurrent

            platform = self._gl._platform
            platform.make_current()
            self._gl._renderer.delete()
            eglMakeCurrent(platform._egl_display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)
            eglDestroyContext(platform._egl_display, platform._egl_context)
        else:
            self._gl.delete()
        self._gl = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
