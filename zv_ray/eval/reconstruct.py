"""A user's own posed images for `zv-ray reconstruct` (predicted 3D Gaussians as a .ply and a turntable video).

    zv-ray reconstruct a.png b.png c.png d.png --cameras cameras.json --checkpoint outputs/runs/tiny --out outputs/recon

Images: as many as the model's train.num_input_views, one square size, the object centred at the world
origin on a white (or transparent: composited on white) background, cameras in the camera-file
convention (zv_ray/data/camera_file.py, docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zv_ray.data.camera_file import frames_for_images, read_camera_file, read_image
from zv_ray.inference.views import PosedViews, object_views


def load_posed_views(images: list[Path], cameras: Path, num_views: int, resolution: int) -> PosedViews:
    """Check the count, sizes and cameras of the user's views and read them, every one an input, resized to the
    model's `resolution` (intrinsics scaled to match)."""
    if len(images) != num_views:
        raise ValueError(
            f"got {len(images)} images but the checkpoint's model takes train.num_input_views = {num_views}; pass exactly {num_views}"
        )
    frames = frames_for_images(read_camera_file(cameras), images, cameras)
    rgba = [read_image(p) for p in images]
    h, w = rgba[0].shape[:2]
    for path, img in zip(images, rgba):
        if img.shape[:2] != (h, w):
            raise ValueError(
                f"images differ in size: {images[0].name} is {w}x{h} but {path.name} is {img.shape[1]}x{img.shape[0]}; "
                "all views must share one size"
            )
    if h != w:
        raise ValueError(f"images are {w}x{h}; the model takes square views: crop them to a square (and shift cx, cy) first")
    for path, frame in zip(images, frames):
        if frame.size is not None and frame.size != (w, h):
            raise ValueError(
                f"{cameras}: the frame of {path.name} says w x h = {frame.size[0]}x{frame.size[1]} but the image is {w}x{h}"
            )
    intrinsics, c2w = np.stack([f.intrinsics for f in frames]), np.stack([f.c2w for f in frames])
    return object_views(np.stack(rgba), intrinsics, c2w, num_views, resolution)
