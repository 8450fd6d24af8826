"""Export of predicted Gaussians (standard 3DGS .ply)."""

from zv_ray.export.ply import load_ply, save_ply

__all__ = ["load_ply", "save_ply"]
