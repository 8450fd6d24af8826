"""Per-face height fields (official HeightFieldCreator): a 5 x 5 random grid with a zero border, smoothly upsampled.

The official code pads the grid with zeros to 7 x 7, resizes it cubically to 30 x 30, zeroes the border
again and resizes linearly to 36 x 36 before sampling at each vertex's UV. Here the cubic step samples
corner-aligned (so the UV square's border is the field's border) and bilinear sampling at the vertex
replaces the last linear resize. Heights are exactly 0 at u or v in {0, 1}: face borders never move.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

GRID = 5  # random heights per face side (official 5 x 5)
SMOOTH = 30  # cubic upsample size (official 30 x 30)


def sample_grid(rng: np.random.Generator, amplitude: float) -> np.ndarray:  # -> [GRID, GRID]
    return rng.uniform(-amplitude, amplitude, (GRID, GRID))


def upsample(grid: np.ndarray) -> np.ndarray:  # grid [GRID, GRID] -> [SMOOTH, SMOOTH]
    padded = np.pad(grid, 1)  # zero border keeps the face rim attached
    t = np.linspace(0.0, GRID + 1.0, SMOOTH)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    field = map_coordinates(padded, [yy, xx], order=3, mode="nearest")  # interpolating cubic spline
    field[[0, -1], :] = 0.0
    field[:, [0, -1]] = 0.0
    return field


def sample(field: np.ndarray, uv: np.ndarray) -> np.ndarray:  # field [S, S], uv [N, 2] in [0, 1] -> [N]
    """Bilinear lookup, corner-aligned: uv 0 and 1 hit the (zero) border samples exactly."""
    size = field.shape[0]
    x, y = uv[:, 0] * (size - 1), uv[:, 1] * (size - 1)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, size - 2)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, size - 2)
    fx, fy = x - x0, y - y0
    top = field[y0, x0] * (1.0 - fx) + field[y0, x0 + 1] * fx
    bottom = field[y0 + 1, x0] * (1.0 - fx) + field[y0 + 1, x0 + 1] * fx
    return top * (1.0 - fy) + bottom * fy
