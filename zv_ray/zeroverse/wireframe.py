"""Wireframe augmentation (official augment_a_wireframe_primitive): tubes along the edges of a new primitive.

The primitive has Blender's default topology (UV sphere 32 x 16, cube, cylinder and cone with 32
sides and n-gon caps, torus 48 x 12), size s ~ U(size range) (sphere radius s, cube edge 2s, torus
major s and minor 0.3 s), a random XYZ Euler rotation U(0, 360) deg, and sits on a surface vertex.
It is subdivided (simple or Catmull-Clark, level 0 or 1; a cube gets level + 2 as in the official
code), then every polygon edge becomes a closed tube of Blender wireframe thickness w ~ U(thickness range), the
full strut width (official 0.01 .. 0.03), so a tube of radius w / 2, textured with one of the object's
materials. It stays a separate geometry, not unioned, as in the official scripts.

Deviation: Blender's cylinder and cone keep depth 2 whatever the radius; here their depth is 2s, so a
wireframe stays the size of the others and the object needs less rescaling to fit its box.
"""

from __future__ import annotations

import numpy as np

from zv_ray.config.zeroverse import ZeroverseConfig
from zv_ray.zeroverse import primitives
from zv_ray.zeroverse.mesh import UVMesh, affine, apply_affine, euler_matrix

TUBE_SIDES = 6  # hexagonal cross-section
TEXTURE_PERIOD = 0.5  # world units per texture repeat along and around a tube


def _ring(n: int, radius: float, z: float) -> np.ndarray:  # -> [n, 3]
    a = 2.0 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a), np.full(n, z)], axis=1)


def polygons(kind: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Blender's default primitive of radius (or half-edge) 1: vertices [V, 3] and polygon loops."""
    if kind == "cube":
        v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
        loops = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
        return v, [np.array(f) for f in loops]
    if kind == "sphere":
        segments, rings = 32, 16
        theta = np.pi * np.arange(1, rings) / rings
        rows = [_ring(segments, np.sin(t), np.cos(t)) for t in theta]
        v = np.concatenate([[[0.0, 0.0, 1.0]], *rows, [[0.0, 0.0, -1.0]]])
        row = lambda r, j: 1 + r * segments + j % segments  # noqa: E731
        loops = [np.array([0, row(0, j), row(0, j + 1)]) for j in range(segments)]
        loops += [np.array([row(r, j), row(r + 1, j), row(r + 1, j + 1), row(r, j + 1)])
                  for r in range(rings - 2) for j in range(segments)]
        loops += [np.array([len(v) - 1, row(rings - 2, j + 1), row(rings - 2, j)]) for j in range(segments)]
        return v, loops
    if kind in ("cylinder", "cone"):
        n = 32
        bottom = _ring(n, 1.0, -1.0)
        top = _ring(n, 1.0, 1.0) if kind == "cylinder" else np.array([[0.0, 0.0, 1.0]])
        v = np.concatenate([bottom, top])
        if kind == "cylinder":
            loops = [np.array([j, (j + 1) % n, n + (j + 1) % n, n + j]) for j in range(n)] + [np.arange(n, 2 * n)]
        else:
            loops = [np.array([j, (j + 1) % n, n]) for j in range(n)]
        return v, loops + [np.arange(n)[::-1]]
    if kind == "torus":
        major, minor = 48, 12
        a = 2.0 * np.pi * np.arange(major) / major
        b = 2.0 * np.pi * np.arange(minor) / minor
        rho = 1.0 + 0.3 * np.cos(b)  # [minor]
        z = np.tile(0.3 * np.sin(b), (major, 1))
        v = np.stack([np.outer(np.cos(a), rho), np.outer(np.sin(a), rho), z], -1).reshape(-1, 3)
        idx = lambda i, j: (i % major) * minor + j % minor  # noqa: E731
        loops = [np.array([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)])
                 for i in range(major) for j in range(minor)]
        return v, loops
    raise ValueError(f"unknown primitive {kind!r}")


def _topology(num_vertices: int, loops: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Corner arrays of a closed polygon mesh: (corners, face_of, prev corner, edge of corner->next, edges [E, 2])."""
    sizes = np.array([len(f) for f in loops])
    corners = np.concatenate(loops)
    face_of = np.repeat(np.arange(len(loops)), sizes)
    start = np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    pos = np.arange(len(corners)) - start
    nxt, prv = start + (pos + 1) % sizes[face_of], start + (pos - 1) % sizes[face_of]
    a, b = corners, corners[nxt]
    keys, corner_edge = np.unique(np.minimum(a, b) * num_vertices + np.maximum(a, b), return_inverse=True)
    return corners, face_of, prv, corner_edge.reshape(-1), np.stack([keys // num_vertices, keys % num_vertices], 1)


def subdivide(vertices: np.ndarray, loops: list[np.ndarray], smooth: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """One level of simple (smooth=False) or Catmull-Clark subdivision of a closed polygon mesh; returns quads."""
    corners, face_of, prv, corner_edge, edges = _topology(len(vertices), loops)
    nv, ne, nf = len(vertices), len(edges), len(loops)
    face_pt = np.zeros((nf, 3))
    np.add.at(face_pt, face_of, vertices[corners])
    face_pt /= np.bincount(face_of)[:, None]
    mid = vertices[edges].mean(axis=1)  # [E, 3]
    if smooth:
        around = np.zeros((ne, 3))
        np.add.at(around, corner_edge, face_pt[face_of])  # each edge borders two faces
        edge_pt = (vertices[edges[:, 0]] + vertices[edges[:, 1]] + around) / 4.0
        valence = np.bincount(edges.ravel(), minlength=nv)[:, None]
        f_avg, r_avg = np.zeros((nv, 3)), np.zeros((nv, 3))
        np.add.at(f_avg, corners, face_pt[face_of])
        np.add.at(r_avg, edges.ravel(), np.repeat(mid, 2, axis=0))
        f_avg, r_avg = f_avg / valence, r_avg / valence
        vert_pt = (f_avg + 2.0 * r_avg + (valence - 3.0) * vertices) / valence
    else:
        edge_pt, vert_pt = mid, vertices
    quads = np.stack([corners, nv + corner_edge, nv + ne + face_of, nv + corner_edge[prv]], axis=1)
    return np.concatenate([vert_pt, edge_pt, face_pt]), list(quads)


def sample_wire(rng: np.random.Generator, cfg: ZeroverseConfig, center: np.ndarray, num_slots: int) -> dict:
    return {
        **primitives.sample_placement(rng, cfg.wire_primitives, cfg.augment_size_range, center),
        "subdivision": ("simple", "catmull_clark")[rng.integers(2)],
        "level": int(rng.integers(2)),
        "thickness": (thickness := float(rng.uniform(*cfg.wire_thickness_range))),
        "radius": thickness / 2,  # Blender's thickness is the strut's full width
        "material_slot": int(rng.integers(num_slots)),
    }


def skeleton(wire: dict) -> tuple[np.ndarray, np.ndarray]:
    """The placed, subdivided primitive's vertices [V, 3] and edges [E, 2] in the object frame."""
    vertices, loops = polygons(wire["kind"])
    levels = wire["level"] + 2 if wire["kind"] == "cube" and wire["level"] > 0 else wire["level"]
    for _ in range(levels):
        vertices, loops = subdivide(vertices, loops, smooth=wire["subdivision"] == "catmull_clark")
    matrix = affine(euler_matrix(wire["rotation_deg"]), wire["center"])
    return apply_affine(matrix, vertices * wire["size"]), _topology(len(vertices), loops)[-1]


def tubes(points: np.ndarray, edges: np.ndarray, radius: float) -> UVMesh:  # points [V, 3], edges [E, 2]
    """A closed hexagonal prism of `radius` around each edge, extended by `radius` past both ends so
    joints close; laid out edge by edge: 2 rings of TUBE_SIDES + 1 vertices (the last repeats the first)."""
    p0, p1 = points[edges[:, 0]], points[edges[:, 1]]
    length = np.linalg.norm(p1 - p0, axis=1, keepdims=True)  # [E, 1]
    d = (p1 - p0) / length
    helper = np.eye(3)[np.argmin(np.abs(d), axis=1)]  # axis least aligned with d
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    a = 2.0 * np.pi * np.arange(TUBE_SIDES + 1) / TUBE_SIDES
    a[-1] = 0.0
    ring = radius * (np.cos(a)[None, :, None] * e1[:, None] + np.sin(a)[None, :, None] * e2[:, None])  # [E, S+1, 3]
    ends = np.stack([p0 - radius * d, p1 + radius * d], axis=1)  # [E, 2, 3]
    vertices = (ends[:, :, None] + ring[:, None]).reshape(-1, 3)  # [E * 2 * (S+1), 3]
    along = np.concatenate([np.zeros_like(length), length + 2 * radius], axis=1) / TEXTURE_PERIOD  # [E, 2]
    around = np.arange(TUBE_SIDES + 1) / TUBE_SIDES * 2 * np.pi * radius / TEXTURE_PERIOD  # [S+1]
    shape = (len(edges), 2, TUBE_SIDES + 1)
    uv = np.stack([np.broadcast_to(around, shape), np.broadcast_to(along[:, :, None], shape)], -1).reshape(-1, 2)
    k, n = np.arange(TUBE_SIDES), TUBE_SIDES + 1
    side = np.concatenate([np.stack([k, k + 1, n + k + 1], 1), np.stack([k, n + k + 1, n + k], 1)])
    fan = np.arange(1, TUBE_SIDES - 1)
    zero = np.zeros_like(fan)
    caps = np.concatenate([np.stack([zero, fan + 1, fan], 1), np.stack([n + zero, n + fan, n + fan + 1], 1)])
    local = np.concatenate([side, caps])  # [T, 3] per tube
    faces = (local[None] + 2 * n * np.arange(len(edges))[:, None, None]).reshape(-1, 3)
    weld = np.arange(len(vertices)).reshape(-1, n)
    weld[:, -1] = weld[:, 0]
    return UVMesh(vertices, uv, faces, weld.reshape(-1))
