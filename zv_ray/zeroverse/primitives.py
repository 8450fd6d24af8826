"""The five Zeroverse primitives as closed, UV-mapped triangle meshes in the unit box [-1, 1]^3.

Each primitive is a few rectangular patches, each a (rows+1) x (cols+1) vertex grid with its own
UV square, so per-face height fields and per-slot textures apply uniformly (official
create_shapes.py: one slot per cube face, cylinder side + caps, sphere). Vertices on patch borders
are duplicated (they carry different UVs) but bitwise identical in position: shared rings come from
one cos/sin table whose last entry is the first. `Surface.weld` records which vertices coincide, so
the mesh is watertight after welding.

Density for resolution n (official n = 50): cube n x n cells per face; sphere n x 2n;
cylinder and cone side n x 3n with n/2 rings per cap; torus 3n (major) x n (minor).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Torus in the unit box: major radius R and minor radius r with R + r = 1 and r = 0.3 R (the official
# cutter's proportions); z is stretched so the torus spans [-1, 1] like every other primitive.
TORUS_MAJOR = 1.0 / 1.3
TORUS_MINOR = 0.3 / 1.3
# Height fields on caps fade to zero outside this fraction of the radius (official smoothCircleBoundRate).
CAP_FADE_START = 0.25


@dataclass(frozen=True)
class Surface:
    """A primitive's mesh in the unit box plus what height fields and textures need."""

    kind: str
    points: np.ndarray  # [N, 3] positions in [-1, 1]^3
    normals: np.ndarray  # [N, 3] outward normals of the unit shape (any length > 0)
    uv: np.ndarray  # [N, 2] patch coordinates in [0, 1]; patch borders are at 0 and 1
    fade: np.ndarray  # [N] height-field weight: 1, falling to 0 at cap rims
    slot: np.ndarray  # [N] local material slot of the vertex's patch
    faces: np.ndarray  # [F, 3] counter-clockwise seen from outside, degenerate triangles removed
    weld: np.ndarray  # [N] index of the first vertex at the same position (itself if unique)
    num_slots: int

    @property
    def face_slot(self) -> np.ndarray:  # [F]
        return self.slot[self.faces[:, 0]]


@dataclass(frozen=True)
class _Patch:
    points: np.ndarray  # [R+1, C+1, 3]
    normals: np.ndarray  # [R+1, C+1, 3]
    uv: np.ndarray  # [R+1, C+1, 2]
    fade: np.ndarray  # [R+1, C+1]
    slot: int


def circle(segments: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of segments+1 angles over [0, 2 pi]; the last entry is exactly the first (closed seam)."""
    phi = np.linspace(0.0, 2.0 * np.pi, segments + 1)
    c, s = np.cos(phi), np.sin(phi)
    c[-1], s[-1] = c[0], s[0]
    return c, s


def _uv_grid(rows: int, cols: int) -> np.ndarray:  # [rows+1, cols+1, 2]
    u, v = np.meshgrid(np.linspace(0.0, 1.0, cols + 1), np.linspace(0.0, 1.0, rows + 1))
    return np.stack([u, v], axis=-1)


def _revolved(radius: np.ndarray, z: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Surface of revolution: rows from (radius, z) [R+1], columns from the angle table [C+1]."""
    zz = np.broadcast_to(z[:, None], (len(z), len(cos)))
    return np.stack([radius[:, None] * cos[None, :], radius[:, None] * sin[None, :], zz], axis=-1)


def _halves(points: np.ndarray, normals: np.ndarray, slot: int) -> list[_Patch]:
    """Split a closed revolution grid [R+1, 2H+1, 3] (rows top to bottom) into two half-turn patches, each
    with a full UV square. Two halves (as the official code's wrapped u) keep a texture's aspect near square.
    """
    half = (points.shape[1] - 1) // 2
    rows = points.shape[0] - 1
    uv = _uv_grid(rows, half)
    uv[..., 1] = 1.0 - uv[..., 1]  # v up the surface, so textures are upright seen from outside
    out = []
    for cols in (slice(0, half + 1), slice(half, 2 * half + 1)):
        p, n = points[:, cols], normals[:, cols]
        out.append(_Patch(p, n, uv, np.ones(p.shape[:2]), slot))
    return out


def _disc(z: float, rings: int, cos: np.ndarray, sin: np.ndarray, slot: int) -> _Patch:
    r = np.linspace(0.0, 1.0, rings + 1)
    points = _revolved(r, np.full(rings + 1, z), cos, sin)
    normals = np.broadcast_to(np.array([0.0, 0.0, np.sign(z)]), points.shape)
    uv = 0.5 + 0.5 * points[..., :2] * np.array([np.sign(z), 1.0])  # unmirrored seen from outside
    rr = (1.0 - r) / (1.0 - CAP_FADE_START)
    fade = np.where(r > CAP_FADE_START, 1.0 - (rr - 1.0) ** 2, 1.0)  # official cap fade, 0 at the rim
    return _Patch(points, normals, uv, np.broadcast_to(fade[:, None], points.shape[:2]), slot)


def _cube(n: int) -> list[_Patch]:
    t = np.linspace(-1.0, 1.0, n + 1)
    patches = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            a, b = (axis + 1) % 3, (axis + 2) % 3
            points = np.empty((n + 1, n + 1, 3))
            points[..., axis] = sign
            points[..., a] = t[None, :]
            points[..., b] = t[:, None]
            normal = np.zeros(3)
            normal[axis] = sign
            uv = _uv_grid(n, n)
            if sign < 0:
                uv[..., 0] = 1.0 - uv[..., 0]  # unmirrored seen from outside
            normals = np.broadcast_to(normal, points.shape)
            patches.append(_Patch(points, normals, uv, np.ones((n + 1, n + 1)), len(patches)))
    return patches


def _sphere(n: int) -> list[_Patch]:
    cos, sin = circle(2 * n)
    theta = np.linspace(0.0, np.pi, n + 1)
    st, ct = np.sin(theta), np.cos(theta)
    st[[0, -1]], ct[[0, -1]] = 0.0, (1.0, -1.0)  # exact poles so pole vertices weld
    points = _revolved(st, ct, cos, sin)
    return _halves(points, points, 0)


def _cylinder(n: int) -> list[_Patch]:
    half = int(np.ceil(1.5 * n))
    cos, sin = circle(2 * half)
    z = np.linspace(1.0, -1.0, n + 1)
    points = _revolved(np.ones(n + 1), z, cos, sin)
    normals = points * np.array([1.0, 1.0, 0.0])
    rings = max(1, n // 2)
    return _halves(points, normals, 0) + [_disc(1.0, rings, cos, sin, 1), _disc(-1.0, rings, cos, sin, 2)]


def _cone(n: int) -> list[_Patch]:
    half = int(np.ceil(1.5 * n))
    cos, sin = circle(2 * half)
    v = np.linspace(0.0, 1.0, n + 1)
    z = 1.0 - 2.0 * v
    points = _revolved(v, z, cos, sin)  # apex at z = 1, base radius 1 at z = -1
    normals = _revolved(np.ones(n + 1), np.full(n + 1, 0.5), cos, sin)  # gradient of rho - (1 - z) / 2
    return _halves(points, normals, 0) + [_disc(-1.0, max(1, n // 2), cos, sin, 1)]


def _torus(n: int) -> list[_Patch]:
    half = int(np.ceil(1.5 * n))
    cos, sin = circle(2 * half)
    ct, st = circle(n)
    points = _revolved(TORUS_MAJOR + TORUS_MINOR * ct, st, cos, sin)
    normals = _revolved(ct, TORUS_MINOR * st, cos, sin)
    return _halves(points, normals, 0)


_BUILDERS = {"cube": _cube, "sphere": _sphere, "cylinder": _cylinder, "cone": _cone, "torus": _torus}
NUM_SLOTS = {"cube": 6, "sphere": 1, "cylinder": 3, "cone": 2, "torus": 1}


def weld_index(points: np.ndarray) -> np.ndarray:  # points [N, 3] -> [N]
    """Index of the first vertex with bitwise-equal position (-0.0 counts as 0.0)."""
    _, first, inverse = np.unique(points + 0.0, axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


def _grid_faces(rows: int, cols: int, outward: bool) -> np.ndarray:  # [2 * rows * cols, 3]
    idx = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.stack([np.stack([a, b, d], 1), np.stack([a, d, c], 1)], 1).reshape(-1, 3)
    return tris if outward else tris[:, ::-1]


def _faces_outward(patch: _Patch) -> bool:
    """Whether (d/du x d/dv) agrees with the normal, judged on the patch's largest cell."""
    p = patch.points
    du, dv = p[:-1, 1:] - p[:-1, :-1], p[1:, :-1] - p[:-1, :-1]
    cross = np.cross(du, dv)
    k = np.unravel_index(np.argmax(np.linalg.norm(cross, axis=-1)), cross.shape[:2])
    return float(cross[k] @ patch.normals[k]) > 0.0


@lru_cache(maxsize=64)
def build(kind: str, n: int) -> Surface:
    """The primitive `kind` at resolution n (see the module docstring for densities).

    Cached (a pure function of its arguments); the arrays are read-only so callers cannot alter the cache.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown primitive {kind!r}; choose from {sorted(_BUILDERS)}")
    patches = _BUILDERS[kind](n)
    faces, offset = [], 0
    for p in patches:
        rows, cols = p.points.shape[0] - 1, p.points.shape[1] - 1
        faces.append(_grid_faces(rows, cols, _faces_outward(p)) + offset)
        offset += (rows + 1) * (cols + 1)
    points = np.concatenate([p.points.reshape(-1, 3) for p in patches])
    weld = weld_index(points)
    faces = np.concatenate(faces)
    wf = weld[faces]
    faces = faces[(wf[:, 0] != wf[:, 1]) & (wf[:, 1] != wf[:, 2]) & (wf[:, 0] != wf[:, 2])]  # poles, apex, cap centres
    surface = Surface(
        kind=kind,
        points=points,
        normals=np.concatenate([p.normals.reshape(-1, 3) for p in patches]),
        uv=np.concatenate([p.uv.reshape(-1, 2) for p in patches]),
        fade=np.concatenate([p.fade.reshape(-1) for p in patches]),
        slot=np.concatenate([np.full(p.points.shape[0] * p.points.shape[1], p.slot) for p in patches]),
        faces=faces,
        weld=weld,
        num_slots=NUM_SLOTS[kind],
    )
    for value in vars(surface).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return surface


def inside(kind: str, p: np.ndarray, margin: float = 0.0) -> np.ndarray:  # p [N, 3] unit-box coords -> [N] bool
    """Analytic point-in-primitive test (height fields ignored); `margin` shrinks the solid."""
    rho = np.hypot(p[:, 0], p[:, 1])
    if kind == "cube":
        return np.abs(p).max(axis=1) < 1.0 - margin
    if kind == "sphere":
        return np.linalg.norm(p, axis=1) < 1.0 - margin
    if kind == "cylinder":
        return (rho < 1.0 - margin) & (np.abs(p[:, 2]) < 1.0 - margin)
    if kind == "cone":
        return (rho < (1.0 - p[:, 2]) / 2.0 - margin) & (np.abs(p[:, 2]) < 1.0 - margin)
    if kind == "torus":
        return np.hypot(rho - TORUS_MAJOR, TORUS_MINOR * p[:, 2]) < TORUS_MINOR * (1.0 - margin)
    raise ValueError(f"unknown primitive {kind!r}")


def sample_placement(
    rng: np.random.Generator, kinds: list[str], size_range: tuple[float, float], center: np.ndarray
) -> dict:
    """Kind, size, rotation and centre of an augmentation primitive (cutter or wireframe), in this draw order."""
    return {
        "kind": kinds[rng.integers(len(kinds))],
        "size": float(rng.uniform(*size_range)),
        "rotation_deg": rng.uniform(0.0, 360.0, 3).tolist(),
        "center": center.tolist(),
    }
