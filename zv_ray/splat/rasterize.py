"""The one place that picks a Gaussian rasterizer: gsplat on CUDA, the pure-torch one on the CPU.

Everything else calls `render_gaussians` and never branches on the device. On CUDA the torch rasterizer is
too slow for real runs, so it is used there only when asked for (`model.rasterizer: torch`).
"""

from __future__ import annotations

import logging
import math
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


# gsplat indexes its tile intersections (every tile each projected Gaussian overlaps, per camera) with int32
# offsets: one call past 2^31 reads out of bounds or renders a wrong image. Calls are kept under half of that
# (the count below follows gsplat's rule, but float rounding at tile edges may differ a little).
INT32_MAX = 2**31 - 1
MAX_INTERSECTIONS = 2**30
GSPLAT_TILE = 16  # gsplat.rasterization's default tile_size for 3DGS (1.5 and 1.6), which render_gaussians keeps


def tile_intersections(
    gaussians: Gaussians, intrinsics: Tensor, c2w: Tensor, width: int, height: int, tile_size: int = GSPLAT_TILE
) -> Tensor:  # [B, V] int64
    """Tile intersections per (scene, camera): every kept Gaussian touches the tiles its projected radius box
    overlaps, clamped to the image (gsplat's isect_tiles rule, from the torch projection). One scene at a time
    bounds the projection's memory."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    out = []
    with torch.no_grad():
        for b in range(gaussians.batch_size):
            g = gaussians.item(b)
            viewmats = c2w_to_viewmat(c2w[b : b + 1].to(g.means.device, torch.float32))
            Ks = intrinsics_to_K(intrinsics[b : b + 1].to(g.means.device, torch.float32))
            covars = torch_rasterizer.quat_scale_to_covar(g.quats.float(), g.scales.float())
            radii, means2d, _, _ = torch_rasterizer.project_gaussians(
                g.means.float(), covars, g.opacities.float(), viewmats, Ks, width, height)
            r = radii.float()
            limit = torch.tensor([tiles_x, tiles_y], device=r.device, dtype=r.dtype)
            lo = torch.minimum(torch.floor((means2d - r) / tile_size).clamp_min(0), limit)
            hi = torch.minimum(torch.ceil((means2d + r) / tile_size).clamp_min(0), limit)
            span = (hi - lo).prod(-1) * (radii > 0).any(-1)  # [1, V, N]
            out.append(span.sum(-1, dtype=torch.int64)[0])
    return torch.stack(out)


def split_calls(counts: Tensor, limit: int) -> tuple[list[tuple[int, slice]] | None, int]:
    """How to split a batch's rasterization so no call exceeds `limit` intersections, and the largest call's count:
    None for one call, else (scene, cameras) calls, a scene per call when each fits, a camera per call otherwise."""
    if (total := int(counts.sum())) <= limit:
        return None, total
    if (scene := int(counts.sum(1).max())) <= limit:
        return [(b, slice(None)) for b in range(counts.shape[0])], scene
    if (camera := int(counts.max())) > limit:
        b, v = divmod(int(counts.argmax()), counts.shape[1])
        raise RuntimeError(
            f"one camera alone needs {camera:,} tile intersections (scene {b}, camera {v}), over the {limit:,} a "
            "rasterizer call may hold: lower train.resolution, or the model's scale limit (model.scale_max_log)")
    return [(b, slice(v, v + 1)) for b in range(counts.shape[0]) for v in range(counts.shape[1])], camera


def render_gaussians(
    gaussians: Gaussians,  # B batch items of N Gaussians
    intrinsics: Tensor,  # [B, V, 4] fx, fy, cx, cy in pixels
    c2w: Tensor,  # [B, V, 4, 4] OpenCV camera-to-world
    width: int,
    height: int,
    background: Tensor | Sequence[float],  # [3]
    rasterizer: Rasterizer = "auto",
    *,
    max_intersections: int | None = None,
    stats: dict[str, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Render every batch item from its V cameras: -> rgb [B, V, H, W, 3], alpha [B, V, H, W, 1].

    gsplat calls are split (split_calls) so none exceeds `max_intersections` (default MAX_INTERSECTIONS; the torch
    rasterizer indexes with int64 and is split only when a limit is given); `stats`, when given, receives
    "max_tile_intersections", the largest count of any call (gsplat's own, or the count that planned the split)."""
    g = gaussians
    if intrinsics.shape[:1] != (g.batch_size,) or c2w.shape[:2] != intrinsics.shape[:2]:
        raise ValueError(
            f"cameras do not match the Gaussians: B={g.batch_size}, intrinsics {tuple(intrinsics.shape)}, c2w {tuple(c2w.shape)}"
        )
    dev = g.means.device
    rasterize = pick_rasterizer(rasterizer, dev)
    gsplat = rasterize is not torch_rasterizer.rasterization
    limit = max_intersections if max_intersections is not None else (MAX_INTERSECTIONS if gsplat else None)
    calls, counted = None, None
    # Counting costs a projection: skip it when even every Gaussian on every tile of every camera would fit.
    tiles = math.ceil(width / GSPLAT_TILE) * math.ceil(height / GSPLAT_TILE)
    if limit is not None and g.batch_size * c2w.shape[1] * g.num * tiles > limit:
        calls, counted = split_calls(tile_intersections(g, intrinsics, c2w, width, height), limit)
    if calls is None:
        rgb, alpha, seen = _rasterize(rasterize, g, intrinsics, c2w, width, height, background)
    else:
        parts = [_rasterize(rasterize, g.item(b), intrinsics[b : b + 1, v], c2w[b : b + 1, v], width, height, background)
                 for b, v in calls]
        # Calls run scene-major, camera-minor: their views, concatenated, are the batch's [B, V] in order.
        rgb, alpha = (torch.cat([p[i] for p in parts], dim=1).reshape(c2w.shape[:2] + (height, width, -1)) for i in (0, 1))
        seen = max((p[2] for p in parts if p[2] is not None), default=None)
    if stats is not None and (found := seen or counted):
        stats["max_tile_intersections"] = max(stats.get("max_tile_intersections", 0), found)
    return rgb, alpha


def _rasterize(rasterize, g: Gaussians, intrinsics: Tensor, c2w: Tensor, width: int, height: int,
               background) -> tuple[Tensor, Tensor, int | None]:
    """One rasterizer call -> rgb, alpha and gsplat's own intersection count (None from the torch rasterizer)."""
    dev = g.means.device
    viewmats = c2w_to_viewmat(c2w.to(dev, torch.float32))
    Ks = intrinsics_to_K(intrinsics.to(dev, torch.float32))
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev).expand(c2w.shape[:2] + (3,))
    args = tuple(a.float() for a in (g.means, g.quats, g.scales, g.opacities, g.colors)) + (viewmats, Ks, width, height)
    rgb, alpha, meta = rasterize(*args, sh_degree=None, backgrounds=bg)
    found = meta.get("flatten_ids")
    if found is None:
        return rgb, alpha, None
    if found.numel() > INT32_MAX:  # gsplat's int32 tile offsets wrapped: this image is wrong
        raise RuntimeError(f"gsplat made {found.numel():,} tile intersections in one call, past int32: "
                           "lower train.resolution or train.micro_batch_size")
    return rgb, alpha, found.numel()
