"""Zeroverse: procedural, textured, augmented objects (LRM-Zero, arXiv 2406.09371).

    from zv_ray.zeroverse import generate_object
    obj = generate_object(seed, object_id, cfg.zeroverse)   # obj.scene, obj.params, obj.stats, obj.to_glb()
"""

from zv_ray.zeroverse.compose import generate_object
from zv_ray.zeroverse.scene import ZeroverseObject

__all__ = ["ZeroverseObject", "generate_object"]
