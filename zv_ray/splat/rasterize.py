"""The one place that picks a Gaussian rasterizer: gsplat on CUDA, the pure-torch one everywhere else.

Everything else calls `render_gaussians` and never branches on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor

from zv_ray.splat import torch_rasterizer
from zv_ray.splat.gaussians import Gaussians


@cache
def _gsplat_rasterization():
    """gsplat.rasterization, or None when gsplat is not installed (CPU machines)."""
    try:
        from gsplat import rasterization
    except ImportError:
        return None
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
    gsplat_rasterization = _gsplat_rasterization() if dev.type == "cuda" else None
    if gsplat_rasterization is not None:
        rgb, alpha, _ = gsplat_rasterization(*args, sh_degree=None, backgrounds=bg)
    else:
        rgb, alpha, _ = torch_rasterizer.rasterization(*args, backgrounds=bg)
    return rgb, alpha
