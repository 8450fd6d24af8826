"""One texture atlas per object: every material slot's texture is a tile of one image.

One image and one geometry per object keep pyrender draw calls and GLB size small (an object can have
54 slots). Tiles are padded by edge replication so bilinear filtering and coarse mip levels do not
bleed neighbouring tiles, and UVs address texel centres only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Atlas:
    image: np.ndarray  # [H, W, 3] uint8
    origins: np.ndarray  # [S, 2] pixel (x, y) of each tile's first texel, y down the image
    tile: int  # tile side in texels (padding excluded)

    def uv(self, slot: np.ndarray, uv: np.ndarray) -> np.ndarray:  # slot [N], uv [N, 2] in [0, 1] -> [N, 2]
        """Atlas coordinates of slot-local UVs (v up, as in trimesh and OpenGL)."""
        h, w = self.image.shape[:2]
        x = self.origins[slot, 0] + 0.5 + uv[:, 0] * (self.tile - 1)
        y = self.origins[slot, 1] + 0.5 + (1.0 - uv[:, 1]) * (self.tile - 1)
        return np.stack([x / w, 1.0 - y / h], axis=1)


def pack(textures: list[np.ndarray]) -> Atlas:  # textures: S x [T, T, 3] uint8
    tile = textures[0].shape[0]
    pad = max(2, tile // 16)
    cols = math.ceil(math.sqrt(len(textures)))
    rows = math.ceil(len(textures) / cols)
    cell = tile + 2 * pad
    image = np.zeros((rows * cell, cols * cell, 3), np.uint8)
    origins = np.zeros((len(textures), 2), np.int64)
    for k, tex in enumerate(textures):
        r, c = divmod(k, cols)
        padded = np.pad(tex, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = padded
        origins[k] = (c * cell + pad, r * cell + pad)
    return Atlas(image=image, origins=origins, tile=tile)
