"""The one place that picks a Gaussian rasterizer: gsplat on CUDA, the pure-torch one on the CPU.

Everything else calls `render_gaussians` and never branches on the device. On CUDA the torch rasterizer is
too slow for real runs, so it is used there only when asked for (`model.rasterizer: torch`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import Literal

import torch
from torch import Tensor

from zv_ray.splat import torch_rasterizer
from zv_ray.splat.backend import RasterizerUnavailable, load_gsplat
from zv_ray.splat.gaussians import Gaussians

log = logging.getLogger(__name__)
Rasterizer = Literal["auto", "gsplat", "torch"]


@cache
def _announce(backend: str, device_type: str) -> None:
    log.info("Gaussian rasterizer: %s on %s", backend, device_type)


def pick_rasterizer(choice: Rasterizer, device: torch.device):
    """gsplat.rasterization or torch_rasterizer.rasterization for `choice` on `device`."""
    if choice == "torch" or (choice == "auto" and device.type != "cuda"):
        _announce("torch", device.type)
        return torch_rasterizer.rasterization
    if device.type != "cuda":
        raise RasterizerUnavailable(f"model.rasterizer=gsplat needs CUDA tensors, got {device.type}: use auto or torch")
    try:
        rasterization = load_gsplat()
    except RasterizerUnavailable as err:
        raise RasterizerUnavailable(f"{err} (or set model.rasterizer=torch to accept the slow torch rasterizer)") from None
    _announce("gsplat", device.type)
    return rasterization


def intrinsics_to_K(intrinsics: Tensor) -> Tensor:  # [..., 4] fx, fy, cx, cy -> [..., 3, 3]
    fx, fy, cx, cy = intrinsics.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(intrinsics.shape[:-1] + (3, 3))


def c2w_to_viewmat(c2w: Tensor) -> Tensor:  # [..., 4, 4] rigid camera-to-world -> world-to-camera
    rot_t = c2w[..., :3, :3].transpose(-1, -2)
    viewmat = torch.zeros_like(c2w)
    viewmat[..., :3, :3] = rot_t
    viewmat[..., :3, 3] = -(rot_t @ c2w[..., :3, 3:])[..., 0]
    viewmat[..., 3, 3] = 1
    return viewmat


def render_gaussians(
    gaussians: Gaussians,  # B batch items of N Gaussians
    intrinsics: Tensor,  # [B, V, 4] fx, fy, cx, cy in pixels
    c2w: Tensor,  # [B, V, 4, 4] OpenCV camera-to-world
    width: int,
    height: int,
    background: Tensor | Sequence[float],  # [3]
    rasterizer: Rasterizer = "auto",
) -> tuple[Tensor, Tensor]:
    """Render every batch item from its V cameras: -> rgb [B, V, H, W, 3], alpha [B, V, H, W, 1]."""
    g = gaussians
    if intrinsics.shape[:1] != (g.batch_size,) or c2w.shape[:2] != intrinsics.shape[:2]:
        raise ValueError(
            f"cameras do not match the Gaussians: B={g.batch_size}, intrinsics {tuple(intrinsics.shape)}, c2w {tuple(c2w.shape)}"
        )
    dev = g.means.device
    viewmats = c2w_to_viewmat(c2w.to(dev, torch.float32))
    Ks = intrinsics_to_K(intrinsics.to(dev, torch.float32))
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev).expand(c2w.shape[:2] + (3,))
    args = (g.means, g.quats, g.scales, g.opacities, g.colors)
    args = tuple(a.float() for a in args) + (viewmats, Ks, width, height)
    rgb, alpha, _ = pick_rasterizer(rasterizer, dev)(*args, sh_degree=None, backgrounds=bg)
    return rgb, alpha
