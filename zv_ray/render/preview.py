"""Contact sheet of generated objects: a few lit views per object, one row per object group.

Lit shading (not the training renders' flat albedo) so height fields and cut walls show their relief.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zv_ray.render.cameras import ring_cameras
from zv_ray.render.renderer import Renderer
from zv_ray.zeroverse.scene import ZeroverseObject

FOV_DEG = 50.0  # official horizontal field of view
RADIUS = 2.7  # official evaluation-ring distance


def contact_sheet(
    objects: list[ZeroverseObject],
    labels: list[str],
    resolution: int = 192,
    views: int = 2,
    elevation_deg: float = 25.0,
    columns: int = 4,
) -> np.ndarray:  # -> [H, W, 3] uint8
    """`views` azimuths per object side by side; objects fill `columns` per row, labelled."""
    intrinsics, c2w = ring_cameras(views, [elevation_deg], RADIUS, FOV_DEG, resolution)
    with Renderer(resolution, shading="lit") as renderer:
        # One strip [res, views * res, 3] per object.
        strips = [np.concatenate(list(renderer.render(o.scene, intrinsics, c2w).rgb), axis=1) for o in objects]
    tiles = []
    for strip, label in zip(strips, labels):
        image = Image.fromarray(np.pad(strip, ((0, 4), (0, 4), (0, 0)), constant_values=255))
        ImageDraw.Draw(image).text((4, 2), label, fill=(0, 0, 0))
        tiles.append(np.asarray(image))
    rows = -(-len(tiles) // columns)
    tiles += [np.full_like(tiles[0], 255)] * (rows * columns - len(tiles))
    return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)


def save_contact_sheet(objects: list[ZeroverseObject], labels: list[str], path: str | Path, **kwargs: object) -> Path:
    path = Path(path)
    Image.fromarray(contact_sheet(objects, labels, **kwargs)).save(path)
    return path
