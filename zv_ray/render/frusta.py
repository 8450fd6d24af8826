"""Contact sheet that proves poses: camera frusta around the object's surface points in 3D, and every
view with the same points projected through its stored intrinsics and pose (dots must land on the object).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import trimesh

from zv_ray.render.cameras import project

_FRUSTUM_DEPTH = 0.35  # world units from the camera centre to the drawn image plane


def surface_points(scene: trimesh.Scene, count: int = 1500, seed: int = 0) -> np.ndarray:
    """Points sampled uniformly on the scene's surfaces, in world coordinates: [count, 3]."""
    mesh = scene.to_mesh() if isinstance(scene, trimesh.Scene) else scene
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points)


def frustum_lines(
    intrinsics: np.ndarray,  # [4]
    c2w: np.ndarray,  # [4, 4] OpenCV
    width: int,
    height: int,
    depth: float = _FRUSTUM_DEPTH,
) -> tuple[np.ndarray, np.ndarray]:
    """World-space frustum: apex [3] and image-plane corners [4, 3] (top-left, top-right, bottom-right, bottom-left)."""
    fx, fy, cx, cy = intrinsics
    uv = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    cam = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(4)], axis=1) * depth
    corners = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return c2w[:3, 3].copy(), corners


def contact_sheet(
    rgba: np.ndarray,  # [V, H, W, 4] uint8
    intrinsics: np.ndarray,  # [V, 4]
    c2w: np.ndarray,  # [V, 4, 4]
    points: np.ndarray,  # [N, 3] object surface points
    path: str | Path,
    title: str = "",
    max_views: int = 16,
) -> Path:
    """Write the sheet as a PNG: 3D frusta (top edge thick, so roll shows; optical axis dotted) + a grid of views."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = min(len(rgba), max_views)
    height, width = rgba.shape[1:3]
    cols = math.ceil(math.sqrt(views))
    rows = math.ceil(views / cols)
    fig = Figure(figsize=(7 + 2.2 * cols, max(7.0, 2.2 * rows)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, 2 * cols, width_ratios=[7 / cols] * cols + [2.2] * cols)
    colors = [f"C{i % 10}" for i in range(views)]

    ax3d = fig.add_subplot(grid[:, :cols], projection="3d")
    ax3d.scatter(*points.T, s=1, c="0.4", alpha=0.5)
    for i in range(views):
        apex, corners = frustum_lines(intrinsics[i], c2w[i], width, height)
        for corner in corners:
            ax3d.plot(*np.stack([apex, corner]).T, color=colors[i], lw=0.8)
        loop = np.concatenate([corners, corners[:1]])
        ax3d.plot(*loop.T, color=colors[i], lw=0.8)
        ax3d.plot(*corners[:2].T, color=colors[i], lw=2.5)  # image top edge
        reach_axis = max(float(-apex @ c2w[i, :3, 2]), 0.0)  # optical axis up to its closest approach to the origin
        ax3d.plot(*np.stack([apex, apex + reach_axis * c2w[i, :3, 2]]).T, color=colors[i], lw=0.5, ls=":")
        ax3d.text(*apex, str(i), color=colors[i], fontsize=8)
    reach = np.abs(c2w[:views, :3, 3]).max() * 1.05
    ax3d.set(xlim=(-reach, reach), ylim=(-reach, reach), zlim=(-reach, reach), xlabel="x", ylabel="y", zlabel="z (up)")
    ax3d.set_box_aspect((1, 1, 1))
    ax3d.set_title(title or "cameras (OpenCV c2w) around the object")

    for i in range(views):
        ax = fig.add_subplot(grid[i // cols, cols + i % cols])
        ax.imshow(rgba[i, ..., :3], extent=(0, width, height, 0))
        uv, z = project(points, intrinsics[i], c2w[i])
        front = z > 0
        ax.scatter(uv[front, 0], uv[front, 1], s=0.3, c="red", alpha=0.35)
        ax.set(xlim=(0, width), ylim=(height, 0), xticks=[], yticks=[])
        ax.set_title(str(i), color=colors[i], fontsize=8, pad=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
