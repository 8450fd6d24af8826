"""Per-object exposure normalization, as the official zeroverse_rgba.py tonemaps its Cycles renders."""

from __future__ import annotations

import numpy as np

_GAMMA = 2.2


def normalize_exposure(
    rgb: np.ndarray,  # [V, H, W, 3] uint8 on white
    alpha: np.ndarray,  # [V, H, W] uint8
) -> np.ndarray:
    """Stretch the object's 1st..99th percentile (per view over covered pixels, averaged over views)
    to the full range in linear light, then re-apply gamma: [V, H, W, 3] uint8, background untouched.

    The official script does this on linear EXR output; our flat renders are display-referred, so
    they are linearized with the same 2.2 gamma first."""
    covered = alpha > 242  # the official alpha > 0.95
    linear = (rgb.astype(np.float32) / 255.0) ** _GAMMA
    bounds = [np.percentile(linear[v][covered[v]], [1, 99]) for v in range(len(rgb)) if covered[v].any()]
    if not bounds:
        return rgb
    lo, hi = np.mean(bounds, axis=0)
    if hi - lo < 1e-6:  # a single flat colour: nothing to stretch
        return rgb
    stretched = np.clip((linear - lo) / (hi - lo), 0.0, 1.0) ** (1 / _GAMMA)
    out = np.where(covered[..., None], np.round(stretched * 255.0), rgb)
    return out.astype(np.uint8)
