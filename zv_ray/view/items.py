"""What the viewer shows for one object: a mesh, Gaussians, posed views and a panel text, any of them optional."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from zv_ray.splat.gaussians import Gaussians


@dataclass
class PosedImages:
    rgba: np.ndarray  # [V, H, W, 4] uint8, RGB on white
    intrinsics: np.ndarray  # [V, 4] fx, fy, cx, cy at the images' size
    c2w: np.ndarray  # [V, 4, 4] OpenCV camera-to-world
    # The first `num_inputs` views are a model's inputs (drawn highlighted); the rest are held out.
    num_inputs: int = 0


@dataclass
class Item:
    title: str
    info: str  # markdown for the panel
    mesh: trimesh.Scene | None = None  # the object's geometry (ground truth beside a reconstruction)
    gaussians: Gaussians | None = None  # B = 1: a .ply's or a model's prediction
    views: PosedImages | None = None
    details: str = ""  # long text (e.g. every sampled parameter as JSON) for a folded panel section
