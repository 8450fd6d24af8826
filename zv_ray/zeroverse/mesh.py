"""Triangle meshes with UVs, and the rigid transforms the generator applies to them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class UVMesh:
    """Vertices split where UVs differ; `weld` says which of them share a position (for manifold3d)."""

    vertices: np.ndarray  # [V, 3]
    uv: np.ndarray  # [V, 2] texture coordinates (OpenGL convention: v points up the image)
    faces: np.ndarray  # [F, 3] int64, counter-clockwise seen from outside
    weld: np.ndarray  # [V] index of the first vertex at the same position (itself if unique)


def concat(meshes: list[UVMesh]) -> UVMesh:
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return UVMesh(
        vertices=np.concatenate([m.vertices for m in meshes]),
        uv=np.concatenate([m.uv for m in meshes]),
        faces=np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]),
        weld=np.concatenate([m.weld + o for m, o in zip(meshes, offsets)]),
    )


def euler_matrix(degrees: np.ndarray | list[float]) -> np.ndarray:  # [3] -> [3, 3]
    """Rotate about X, then Y, then Z (fixed axes), as the official scripts and Blender's XYZ Euler do."""
    return Rotation.from_euler("xyz", np.asarray(degrees, dtype=float), degrees=True).as_matrix()


def affine(rotation: np.ndarray, translation: np.ndarray | list[float]) -> np.ndarray:  # [3, 3], [3] -> [4, 4]
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:  # [4, 4], [N, 3] -> [N, 3]
    """Elementwise products and sums (no BLAS), so equal input rows give bitwise-equal output rows
    regardless of thread count or row position."""
    m = matrix[:3]
    return points[:, 0:1] * m[:, 0] + points[:, 1:2] * m[:, 1] + points[:, 2:3] * m[:, 2] + m[:, 3]
