"""Assemble one Zeroverse object: parts -> textures -> boolean cut -> wireframe -> fit -> scene.

    from zv_ray.zeroverse import generate_object
    obj = generate_object(seed=0, object_id=7, cfg=ZeroverseConfig())
    obj.scene, obj.params, obj.stats, obj.to_glb()

Augmentations run after normalization, as in the official scripts. A cut only removes material, but a
wireframe centred on a surface vertex can stick out of [-0.9, 0.9]^3; then the whole object is
recentred and, if still too large, shrunk to the normalized extent (params["fit"] records it; the tube
radius shrinks with it), so every object stays inside the box the renderer's cameras expect.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

import zv_ray
from zv_ray.config.zeroverse import ZeroverseConfig
from zv_ray.zeroverse import boolean, materials, wireframe
from zv_ray.zeroverse.atlas import pack
from zv_ray.zeroverse.mesh import UVMesh, affine, apply_affine, concat
from zv_ray.zeroverse.parts import build_parts, normalize, pick_surface_point, sample_heightfields, sample_parts
from zv_ray.zeroverse.rng import stage_rng
from zv_ray.zeroverse.scene import ZeroverseObject, build_scene


class _Timer:
    def __init__(self) -> None:
        self.stats: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stats[f"t_{stage}"] = self.stats.get(f"t_{stage}", 0.0) + time.perf_counter() - start


def _fit(meshes: list[UVMesh], half_extent: float) -> tuple[list[UVMesh], dict]:
    """If something leaves the box: recentre, and shrink (never enlarge) to a largest extent of 2 * half_extent."""
    allv = np.concatenate([m.vertices for m in meshes])
    if np.abs(allv).max() <= half_extent * (1.0 + 1e-9):  # normalization itself may overshoot by rounding
        return meshes, {"applied": False}
    lo, hi = allv.min(axis=0), allv.max(axis=0)
    scale = min(1.0, 2.0 * half_extent / float((hi - lo).max()))
    norm = affine(np.eye(3) * scale, -scale * (lo + hi) / 2.0)
    out = [UVMesh(apply_affine(norm, m.vertices)[m.weld], m.uv, m.faces, m.weld) for m in meshes]
    return out, {"applied": True, "center": ((lo + hi) / 2.0).tolist(), "scale": scale}


def generate_object(seed: int, object_id: int, cfg: ZeroverseConfig) -> ZeroverseObject:
    """One object, a pure function of (seed, object_id, cfg): byte-identical GLB in any process."""
    timer = _Timer()
    t0 = time.perf_counter()
    with timer("parts"):
        specs = sample_parts(stage_rng(seed, object_id, "parts"), cfg)
        fields = sample_heightfields(stage_rng(seed, object_id, "heightfield"), specs, cfg)
        parts, normalization = normalize(build_parts(specs, fields, cfg.mesh_resolution), cfg.normalized_extent)

    with timer("textures"):
        rng = stage_rng(seed, object_id, "materials")
        sizes = materials.slot_sizes(parts)
        recipes = materials.sample_recipes(rng, len(sizes), cfg.texture)
        starts = materials.jitter_starts(rng, sizes, cfg.texture.seam_jitter)
        images = [materials.render(r, cfg.texture) for r in recipes]
        atlas = pack(images)
    with timer("uv"):
        meshes: list[UVMesh | None] = materials.part_meshes(parts, starts, atlas)

    cut: dict = {"applied": False}
    rng = stage_rng(seed, object_id, "boolean")
    if rng.uniform() < cfg.p_boolean:
        with timer("boolean"):
            center, visible = pick_surface_point(rng, parts, [p.vertices for p in parts])
            cut = boolean.sample_cut(rng, cfg, center, len(sizes)) | {"applied": True, "center_visible": visible}
            meshes, report = boolean.carve(meshes, boolean.cutter_mesh(cut, atlas))
            cut |= report

    wire: dict = {"applied": False}
    wire_mesh = None
    rng = stage_rng(seed, object_id, "wireframe")
    if rng.uniform() < cfg.p_wireframe:
        with timer("wireframe"):
            current = [m.vertices if m is not None else np.zeros((0, 3)) for m in meshes]
            center, visible = pick_surface_point(rng, parts, current)
            wire = wireframe.sample_wire(rng, cfg, center, len(sizes)) | {"applied": True, "center_visible": visible}
            wire_mesh = wireframe.tubes(*wireframe.skeleton(wire), wire["radius"])

    with timer("scene"):
        body = concat([m for m in meshes if m is not None])
        fitted, fit = _fit([body] + ([wire_mesh] if wire_mesh is not None else []), cfg.normalized_extent / 2.0)
        geometries = {"body": (fitted[0], atlas.image)}
        if wire_mesh is not None:
            geometries["wireframe"] = (fitted[1], images[wire["material_slot"]])
        scene = build_scene(geometries)

    params = {
        "generator": f"zv_ray {zv_ray.__version__}",
        "seed": seed,
        "object_id": object_id,
        "config": cfg.model_dump(mode="json"),
        "parts": [spec | {"heightfields": hf} for spec, hf in zip(specs, fields)],
        "normalization": normalization,
        "materials": {"recipes": recipes, "slot_sizes": sizes.tolist(), "jittered_starts": starts.tolist()},
        "boolean": cut,
        "wireframe": wire,
        "fit": fit,
    }
    stats = {
        "num_parts": len(parts),
        "num_slots": len(sizes),
        "num_faces": int(sum(len(g.faces) for g in scene.geometry.values())),
        "boolean_applied": int(cut["applied"]),
        "boolean_failed": int(cut.get("failed", False)),
        "wireframe_applied": int(wire["applied"]),
        **timer.stats,
        "t_total": time.perf_counter() - t0,
    }
    return ZeroverseObject(scene=scene, params=params, stats=stats)
