"""Material slots: one texture per slot, seam jitter, and per-part meshes with atlas UVs."""

from __future__ import annotations

import numpy as np

from zv_ray.config.zeroverse import TextureConfig
from zv_ray.zeroverse import textures
from zv_ray.zeroverse.atlas import Atlas
from zv_ray.zeroverse.mesh import UVMesh
from zv_ray.zeroverse.parts import Part


def sample_recipes(rng: np.random.Generator, num_slots: int, cfg: TextureConfig) -> list[dict]:
    if cfg.source == "folder":
        files = textures.list_images(cfg.folder)
        return [textures.sample_image_recipe(rng, files) for _ in range(num_slots)]
    return [textures.sample_recipe(rng) for _ in range(num_slots)]


def render(recipe: dict, cfg: TextureConfig) -> np.ndarray:  # -> [res, res, 3] uint8
    if "image" in recipe:
        return textures.render_image_recipe(recipe, cfg.folder, cfg.resolution)
    return textures.render_recipe(recipe, cfg.resolution)


def jitter_starts(rng: np.random.Generator, slot_sizes: np.ndarray, ratio: float) -> np.ndarray:  # [S] -> [S]
    """Official permuteMatIds: each slot's first face moves by up to `ratio` of the neighbouring slots'
    face counts, so material seams stop following primitive faces. Returns the new first-face indices."""
    starts = np.concatenate([[0], np.cumsum(slot_sizes)[:-1]])
    for i in range(1, len(starts)):
        lo, hi = -int(ratio * slot_sizes[i - 1]), int(ratio * slot_sizes[i])
        starts[i] += rng.integers(lo, max(hi, lo + 1))
    return starts


def slot_sizes(parts: list[Part]) -> np.ndarray:  # -> [S] faces per slot, slots numbered part by part
    return np.concatenate([np.bincount(p.surface.face_slot, minlength=p.surface.num_slots) for p in parts])


def part_meshes(parts: list[Part], starts: np.ndarray, atlas: Atlas) -> list[UVMesh | None]:
    """Per part: faces take the material of the (jittered) slot range they fall in; vertices are split
    per material so each carries its tile's atlas UV."""
    meshes, first_face = [], 0
    for part in parts:
        faces = part.surface.faces
        material = np.searchsorted(starts, first_face + np.arange(len(faces)), side="right") - 1  # [F]
        first_face += len(faces)
        keys, corner = np.unique(faces * len(starts) + material[:, None], return_inverse=True)
        src, mat = keys // len(starts), keys % len(starts)
        _, first, root = np.unique(part.surface.weld[src], return_index=True, return_inverse=True)
        meshes.append(UVMesh(
            vertices=part.vertices[src],
            uv=atlas.uv(mat, part.surface.uv[src]),
            faces=corner.reshape(-1, 3),
            weld=first[root.reshape(-1)],
        ))
    return meshes
