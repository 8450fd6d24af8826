"""What the viewer shows for one object: a mesh, Gaussians, posed views and a panel text, any of them optional."""

from __future__ import annotations

from dataclasses import dataclass

import trimesh

from zv_ray.inference.views import PosedViews
from zv_ray.splat.gaussians import Gaussians


@dataclass
class Item:
    title: str
    info: str  # markdown for the panel
    mesh: trimesh.Scene | None = None  # the object's geometry (ground truth beside a reconstruction)
    gaussians: Gaussians | None = None  # B = 1: a .ply's or a model's prediction
    # B = 1; the first `num_inputs` views are a model's inputs (drawn highlighted), the rest are held out.
    views: PosedViews | None = None
    details: str = ""  # long text (e.g. every sampled parameter as JSON) for a folded panel section
