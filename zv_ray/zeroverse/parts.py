"""Object parts as in the official create_shapes.py (MultiShape.genShape), plus normalization.

Per part: a primitive with semi-axes U(range) per axis, per-face height fields, rotation U(0, 180) deg
about X, Y, Z and translation U(0, 0.5 * max extent) per axis. Before each new part the shape built
so far is rotated and translated again by fresh draws. Then the object is recentred on its bounding
box and scaled so its largest extent is `normalized_extent`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zv_ray.config.zeroverse import ZeroverseConfig
from zv_ray.zeroverse import heightfield, primitives
from zv_ray.zeroverse.mesh import affine, apply_affine, euler_matrix


@dataclass(frozen=True)
class Part:
    kind: str
    semi_axes: np.ndarray  # [3]
    matrix: np.ndarray  # [4, 4] part frame -> object frame
    surface: primitives.Surface
    vertices: np.ndarray  # [N, 3] object frame, height fields applied


def sample_parts(rng: np.random.Generator, cfg: ZeroverseConfig) -> list[dict]:
    """Part count, primitive, semi-axes, rotation, translation and the re-placement of the shape so far."""
    weights = np.asarray(cfg.part_count_weights, dtype=float)
    count = int(rng.choice(len(weights), p=weights / weights.sum())) + 1
    specs = []
    for i in range(count):
        semi = rng.uniform(*cfg.semi_axis_range, 3)
        max_extent = 2.0 * semi.max()
        spec = {
            "kind": cfg.primitives[rng.integers(len(cfg.primitives))],
            "semi_axes": semi.tolist(),
            "rotation_deg": rng.uniform(0.0, 180.0, 3).tolist(),
            "translation": rng.uniform(0.0, 0.5 * max_extent, 3).tolist(),
        }
        if i > 0:  # official: the accumulated shape is moved by fresh draws before adding this part
            spec["previous_rotation_deg"] = rng.uniform(0.0, 180.0, 3).tolist()
            spec["previous_translation"] = rng.uniform(0.0, 0.5 * max_extent, 3).tolist()
        specs.append(spec)
    return specs


def sample_heightfields(rng: np.random.Generator, specs: list[dict], cfg: ZeroverseConfig) -> list[list[dict | None]]:
    """Per part, per material slot: None (smooth) or {amplitude, grid} with amplitude U(0, scale * min extent)."""
    out = []
    for spec in specs:
        min_extent = 2.0 * min(spec["semi_axes"])
        slots: list[dict | None] = []
        for _ in range(primitives.NUM_SLOTS[spec["kind"]]):
            if rng.uniform() < cfg.p_heightfield:
                amplitude = float(rng.uniform(0.0, cfg.heightfield_scale * min_extent))
                slots.append({"amplitude": amplitude, "grid": heightfield.sample_grid(rng, amplitude).tolist()})
            else:
                slots.append(None)
        out.append(slots)
    return out


def displaced(surface: primitives.Surface, semi_axes: np.ndarray, fields: list[dict | None]) -> np.ndarray:  # -> [N, 3]
    """Scale the unit primitive and push vertices along the true normal by their slot's height field."""
    normals = surface.normals / semi_axes  # inverse-transpose of the scaling
    normals = normals / np.sqrt((normals * normals).sum(axis=1, keepdims=True))
    height = np.zeros(len(surface.points))
    for slot, hf in enumerate(fields):
        if hf is not None:
            sel = surface.slot == slot
            field = heightfield.upsample(np.asarray(hf["grid"]))
            height[sel] = heightfield.sample(field, surface.uv[sel]) * surface.fade[sel]
    return surface.points * semi_axes + height[:, None] * normals


def build_parts(specs: list[dict], fields: list[list[dict | None]], resolution: int) -> list[Part]:
    """Parts in the (unnormalized) object frame, accumulating the official re-placements."""
    matrices: list[np.ndarray] = []
    for spec in specs:
        if matrices:
            move = affine(euler_matrix(spec["previous_rotation_deg"]), spec["previous_translation"])
            matrices = [move @ m for m in matrices]
        matrices.append(affine(euler_matrix(spec["rotation_deg"]), spec["translation"]))
    parts = []
    for spec, hf, matrix in zip(specs, fields, matrices):
        surface = primitives.build(spec["kind"], resolution)
        semi = np.asarray(spec["semi_axes"])
        local = displaced(surface, semi, hf)
        vertices = apply_affine(matrix, local)[surface.weld]  # snap coincident vertices to one position
        parts.append(Part(spec["kind"], semi, matrix, surface, vertices))
    return parts


def normalize(parts: list[Part], extent: float) -> tuple[list[Part], dict]:
    """Recentre on the bounding box and scale the largest extent to `extent`."""
    allv = np.concatenate([p.vertices for p in parts])
    lo, hi = allv.min(axis=0), allv.max(axis=0)
    scale = extent / float((hi - lo).max())
    norm = affine(np.eye(3) * scale, -scale * (lo + hi) / 2.0)
    out = [Part(p.kind, p.semi_axes, norm @ p.matrix, p.surface, apply_affine(norm, p.vertices)) for p in parts]
    return out, {"center": ((lo + hi) / 2.0).tolist(), "scale": scale}


def pick_surface_point(
    rng: np.random.Generator, parts: list[Part], vertices: list[np.ndarray], tries: int = 16
) -> tuple[np.ndarray, bool]:
    """A random surface vertex (official: uniform over vertices), preferring ones not buried inside
    another part, so cuts and wireframes land where they can be seen. `vertices[k]` are part k's
    current vertices (after a cut, possibly none). Returns (point [3], visible)."""
    sizes = np.array([len(v) for v in vertices])
    flat = rng.integers(sizes.sum(), size=tries)
    owner = np.searchsorted(np.cumsum(sizes), flat, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    points = np.stack([vertices[o][i - starts[o]] for o, i in zip(owner, flat)])  # [tries, 3]
    buried = np.zeros(tries, bool)
    for k, part in enumerate(parts):
        local = apply_affine(np.linalg.inv(part.matrix), points) / part.semi_axes
        buried |= primitives.inside(part.kind, local, margin=0.02) & (owner != k)
    choice = int(np.argmin(buried))  # first visible candidate, else the first one
    return points[choice], not bool(buried[choice])
