"""A small synthetic scene (coloured Gaussian blobs seen from a camera ring) for tests and benchmarks.

It needs no mesh renderer: the target images are this repo's own splats, so a model can be overfit
and timed on CPU before any Zeroverse data exists.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from zv_ray.render.cameras import ring_cameras
from zv_ray.splat.gaussians import Gaussians
from zv_ray.splat.rasterize import render_gaussians


def random_blobs(num: int, seed: int = 0, extent: float = 0.6) -> Gaussians:
    """num opaque-ish coloured Gaussians inside [-extent, extent]^3 (B=1)."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    return Gaussians(
        means=(rand(1, num, 3) * 2 - 1) * extent,
        scales=0.04 + 0.12 * rand(1, num, 3),
        quats=torch.nn.functional.normalize(torch.randn(1, num, 4, generator=gen), dim=-1),
        opacities=0.6 + 0.39 * rand(1, num),
        colors=rand(1, num, 3),
    )


def ring(num_views: int, resolution: int, radius: float = 2.7, elevation_deg: float = 20.0) -> tuple[Tensor, Tensor]:
    """Cameras evenly spaced around the origin (fov 50, the Zeroverse rig): intrinsics [1, V, 4], c2w [1, V, 4, 4]."""
    intrinsics, c2w = ring_cameras(num_views, [elevation_deg], radius, 50.0, resolution)
    return torch.from_numpy(np.asarray(intrinsics))[None], torch.from_numpy(c2w)[None]


@torch.no_grad()
def blob_views(num_views: int, resolution: int, num_blobs: int = 64, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Rendered views of random_blobs on white: images [1, V, 3, H, W] in [0, 1], intrinsics [1, V, 4], c2w [1, V, 4, 4]."""
    intrinsics, c2w = ring(num_views, resolution)
    rgb, _ = render_gaussians(random_blobs(num_blobs, seed), intrinsics, c2w, resolution, resolution, (1.0, 1.0, 1.0))
    return rgb.permute(0, 1, 4, 2, 3).clamp(0, 1), intrinsics, c2w
