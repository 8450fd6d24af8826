"""Per-pixel rays and the Plücker embedding the model consumes.

Convention (used everywhere in zv-ray): OpenCV cameras, x right, y down, z forward; poses are
camera-to-world 4x4 matrices; intrinsics are (fx, fy, cx, cy) in pixels with pixel centres at +0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ray_directions(
    intrinsics: Tensor,  # [..., 4] fx, fy, cx, cy
    c2w: Tensor,  # [..., 4, 4]
    height: int,
    width: int,
) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions per pixel: ([..., H, W, 3], [..., H, W, 3])."""
    dtype, device = c2w.dtype, c2w.device
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    fx, fy, cx, cy = (intrinsics[..., i, None, None] for i in range(4))
    x, y = (u - cx) / fx, (v - cy) / fy  # [..., H, W]
    cam_dirs = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    rot = c2w[..., None, None, :3, :3]  # [..., 1, 1, 3, 3]
    dirs = (rot @ cam_dirs[..., None]).squeeze(-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def plucker_rays(
    intrinsics: Tensor,  # [..., 4]
    c2w: Tensor,  # [..., 4, 4]
    height: int,
    width: int,
) -> Tensor:
    """Plücker coordinates (o x d, d) per pixel, channels first: [..., 6, H, W]."""
    origins, dirs = ray_directions(intrinsics, c2w, height, width)
    moment = torch.cross(origins, dirs, dim=-1)
    return torch.cat([moment, dirs], dim=-1).movedim(-1, -3)
