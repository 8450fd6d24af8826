"""3D Gaussians and their rasterization (gsplat on CUDA, pure torch elsewhere)."""

from zv_ray.splat.gaussians import Gaussians
from zv_ray.splat.rasterize import render_gaussians

__all__ = ["Gaussians", "render_gaussians"]
