"""GS-LRM: posed views -> per-pixel 3D Gaussians."""

from zv_ray.model.gslrm import GSLRM, TINY, flops_per_step, num_params

__all__ = ["GSLRM", "TINY", "flops_per_step", "num_params"]
