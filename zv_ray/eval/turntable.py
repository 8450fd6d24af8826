"""A turntable video of predicted Gaussians: a camera ring around the origin, splatted and written as mp4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zv_ray.render.cameras import ring_cameras
from zv_ray.splat.gaussians import Gaussians

# Frames splatted per call: bounds memory of the CPU rasterizer.
_FRAMES_PER_CALL = 8


def render_turntable(
    gaussians: Gaussians,  # one object (B = 1)
    *,
    num_frames: int,
    elevation_deg: float,
    radius: float,
    fov_deg: float,
    resolution: int,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:  # [F, H, W, 3] uint8
    """Frames at evenly spaced azimuths, one full turn, looking at the origin with +Z up."""
    from zv_ray.splat.rasterize import render_gaussians

    if gaussians.batch_size != 1:
        raise ValueError(f"render_turntable takes one object, got a batch of {gaussians.batch_size}")
    intrinsics, c2w = ring_cameras(num_frames, [elevation_deg], radius, fov_deg, resolution)
    device = gaussians.means.device
    frames = []
    with torch.no_grad():
        for i in range(0, num_frames, _FRAMES_PER_CALL):
            k = torch.from_numpy(intrinsics[i : i + _FRAMES_PER_CALL])[None].to(device)  # [1, F, 4]
            pose = torch.from_numpy(c2w[i : i + _FRAMES_PER_CALL])[None].to(device)  # [1, F, 4, 4]
            rgb, _ = render_gaussians(gaussians, k, pose, resolution, resolution, list(background))
            frames.append((rgb[0].clamp(0, 1) * 255).round().byte().cpu().numpy())
    return np.concatenate(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 24) -> Path:  # frames [F, H, W, 3] uint8
    """H.264 mp4 through imageio-ffmpeg (yuv420p, so sides must be even: the model's sizes are)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, list(frames), fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1)
    return path
