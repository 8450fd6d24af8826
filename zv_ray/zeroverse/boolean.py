"""Boolean-difference augmentation (official augment_with_boolean) with manifold3d.

A cutter (sphere radius s, cube edge 2s, cone and cylinder radius s with Blender's default depth 2,
torus major s and minor 0.3 s; s ~ U(size range); Euler rotation U(0, 360) deg) centred on a surface
vertex is subtracted from every part it touches: (A u B) - C = (A - C) u (B - C), so each closed part
stays a valid manifold input even though parts overlap. UVs ride along as manifold3d vertex
properties; the cavity walls come from the cutter's surface and carry one of the object's materials.

The official solidify step (thickness U(0.01, 0.02)) gives thickness to surfaces left open by
Blender's FAST solver on unwelded meshes; manifold3d returns closed solids, so no surface is open and
the step has nothing to do.

A cut that raises, or that removes nothing or everything, leaves the object uncut and is reported.
"""

from __future__ import annotations

import manifold3d
import numpy as np

from zv_ray.config.zeroverse import ZeroverseConfig
from zv_ray.zeroverse import primitives
from zv_ray.zeroverse.atlas import Atlas
from zv_ray.zeroverse.mesh import UVMesh, affine, apply_affine, euler_matrix

# Cutter tessellation: 16 rings x 32 segments for a sphere, like Blender's default UV sphere.
CUTTER_RESOLUTION = 16


class BooleanError(RuntimeError):
    """manifold3d rejected an input or produced an unusable result."""


def cutter_semi_axes(kind: str, size: float) -> np.ndarray:  # -> [3]
    return {
        "sphere": np.array([size, size, size]),
        "cube": np.array([size, size, size]),
        "cylinder": np.array([size, size, 1.0]),
        "cone": np.array([size, size, 1.0]),
        "torus": np.array([1.3 * size, 1.3 * size, 0.3 * size]),
    }[kind]


def sample_cut(rng: np.random.Generator, cfg: ZeroverseConfig, center: np.ndarray, num_slots: int) -> dict:
    return {
        **primitives.sample_placement(rng, cfg.cutter_primitives, cfg.augment_size_range, center),
        "material_slot": int(rng.integers(num_slots)),  # texture of the cavity walls
    }


def cutter_mesh(cut: dict, atlas: Atlas) -> UVMesh:
    surface = primitives.build(cut["kind"], CUTTER_RESOLUTION)
    matrix = affine(euler_matrix(cut["rotation_deg"]), cut["center"])
    vertices = apply_affine(matrix, surface.points * cutter_semi_axes(cut["kind"], cut["size"]))[surface.weld]
    uv = atlas.uv(np.full(len(surface.uv), cut["material_slot"]), surface.uv)
    return UVMesh(vertices, uv, np.asarray(surface.faces, dtype=np.int64), np.asarray(surface.weld))


def to_manifold(mesh: UVMesh) -> manifold3d.Manifold:
    merge_from = np.flatnonzero(mesh.weld != np.arange(len(mesh.weld)))
    solid = manifold3d.Manifold(manifold3d.Mesh64(
        vert_properties=np.ascontiguousarray(np.hstack([mesh.vertices, mesh.uv])),
        tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint64),
        merge_from_vert=merge_from.astype(np.uint64),
        merge_to_vert=mesh.weld[merge_from].astype(np.uint64),
    ))
    if solid.status() != manifold3d.Error.NoError:
        raise BooleanError(f"manifold3d rejected a mesh: {solid.status().name}")
    return solid


def from_manifold(solid: manifold3d.Manifold) -> UVMesh:
    out = solid.to_mesh64()
    props = np.asarray(out.vert_properties)
    weld = np.arange(len(props))
    weld[np.asarray(out.merge_from_vert, dtype=np.int64)] = np.asarray(out.merge_to_vert, dtype=np.int64)
    return UVMesh(props[:, :3].copy(), props[:, 3:5].copy(), np.asarray(out.tri_verts, dtype=np.int64), weld)


def difference(meshes: list[UVMesh | None], cutter: UVMesh) -> tuple[list[UVMesh | None], float, float]:
    """Subtract the cutter from every part whose box it overlaps: (parts, volume before, volume removed).
    A part the cutter swallows becomes None, so the list stays aligned with the parts."""
    knife = to_manifold(cutter)
    lo, hi = cutter.vertices.min(axis=0), cutter.vertices.max(axis=0)
    out: list[UVMesh | None] = []
    before = removed = 0.0
    for mesh in meshes:
        if mesh is None or np.any(mesh.vertices.max(axis=0) < lo) or np.any(mesh.vertices.min(axis=0) > hi):
            out.append(mesh)
            continue
        solid = to_manifold(mesh)
        cut = solid - knife
        if cut.status() != manifold3d.Error.NoError:
            raise BooleanError(f"difference failed: {cut.status().name}")
        before += solid.volume()
        removed += solid.volume() - cut.volume()
        out.append(None if cut.is_empty() else from_manifold(cut))
    return out, before, removed


def carve(meshes: list[UVMesh | None], cutter: UVMesh) -> tuple[list[UVMesh | None], dict]:
    """Cut, or fall back to the uncut parts. Returns (parts, report) and never raises."""
    try:
        cut, before, removed = difference(meshes, cutter)
    except Exception as err:  # manifold3d errors, bad inputs, a patched failure: keep the object
        return meshes, {"failed": True, "reason": f"{type(err).__name__}: {err}"}
    if all(m is None for m in cut):
        return meshes, {"failed": True, "reason": "degenerate: the cut removed everything"}
    if removed <= 1e-9 * max(before, 1e-12):
        return meshes, {"failed": True, "reason": "degenerate: the cut removed nothing"}
    return cut, {"failed": False, "volume_removed": removed}
