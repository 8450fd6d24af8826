"""Camera layouts and pose conventions, pure numpy.

Convention (everywhere in zv-ray): OpenCV cameras (x right, y down, z forward), poses are
camera-to-world 4x4 matrices, intrinsics are (fx, fy, cx, cy) in pixels with pixel centres at +0.5,
and the world is +Z up like Blender. The random layout is the official zeroverse_rgba.py one.
"""

from __future__ import annotations

import numpy as np

from zv_ray.config.render import RenderConfig

# OpenCV and OpenGL cameras differ by flipping the camera's y and z axes.
_CV_GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> np.ndarray:
    """Horizontal field of view -> (fx, fy, cx, cy) with square pixels: [4] float32."""
    fx = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([fx, fx, width / 2, height / 2], dtype=np.float32)


def look_at(
    eye: np.ndarray,  # [3]
    target: np.ndarray,  # [3]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """OpenCV camera-to-world pose at `eye` looking at `target` with world `up` pointing image-up: [4, 4]."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError(f"look_at: eye and target coincide at {eye.tolist()}")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:
        # Looking straight along `up` (a pole camera): any image-up is valid; take world +Y.
        right = np.cross(forward, (0.0, 1.0, 0.0))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def sample_positions(rng: np.random.Generator, cfg: RenderConfig) -> np.ndarray:
    """Official random camera centres: direction uniform in the cube [-1, 1]^3 then normalized
    (so not uniform on the sphere), radius uniform in radius_range, rejected unless the height
    lies strictly inside height_range. Returns [V, 3]."""
    (r_lo, r_hi), (z_lo, z_hi) = cfg.radius_range, cfg.height_range
    if z_lo >= r_hi or z_hi <= -r_hi:
        raise ValueError(f"render.height_range {list(cfg.height_range)} is unreachable at radius <= {r_hi}")
    out = np.empty((cfg.num_views, 3))
    for i in range(cfg.num_views):
        while True:
            direction = rng.uniform(-1.0, 1.0, 3)
            radius = rng.uniform(r_lo, r_hi)
            position = direction / np.linalg.norm(direction) * radius
            if z_lo < position[2] < z_hi:
                out[i] = position
                break
    return out


def sample_cameras(rng: np.random.Generator, cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """Official random layout looking at the origin: (intrinsics [V, 4], c2w [V, 4, 4]) float32."""
    c2w = np.stack([look_at(p, np.zeros(3)) for p in sample_positions(rng, cfg)])
    intrinsics = np.tile(intrinsics_from_fov(cfg.fov_deg, cfg.resolution, cfg.resolution), (cfg.num_views, 1))
    return intrinsics, c2w.astype(np.float32)


def ring_cameras(
    num_views: int, elevations_deg: list[float], radius: float, fov_deg: float, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation rig: num_views / len(elevations) evenly spaced azimuths (from +X towards +Y) at each
    elevation, looking at the origin: (intrinsics [V, 4], c2w [V, 4, 4]) float32."""
    if not elevations_deg or num_views % len(elevations_deg):
        raise ValueError(
            f"ring layout: num_views {num_views} must be a positive multiple of the number of elevations "
            f"({len(elevations_deg)}: {elevations_deg})"
        )
    per_ring = num_views // len(elevations_deg)
    azimuth = np.tile(np.linspace(0.0, 2 * np.pi, per_ring, endpoint=False), len(elevations_deg))
    elevation = np.deg2rad(np.repeat(np.asarray(elevations_deg, dtype=np.float64), per_ring))
    positions = radius * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1
    )
    c2w = np.stack([look_at(p, np.zeros(3)) for p in positions])
    intrinsics = np.tile(intrinsics_from_fov(fov_deg, resolution, resolution), (num_views, 1))
    return intrinsics, c2w.astype(np.float32)


def cameras_for(rng: np.random.Generator, cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """The layout cfg.layout names: (intrinsics [V, 4], c2w [V, 4, 4]); the ring ignores rng."""
    if cfg.layout == "ring":
        return ring_cameras(cfg.num_views, cfg.ring_elevations_deg, cfg.ring_radius, cfg.fov_deg, cfg.resolution)
    return sample_cameras(rng, cfg)


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world [..., 4, 4] -> OpenGL (x right, y up, z backward) camera-to-world."""
    return c2w @ _CV_GL_FLIP.astype(c2w.dtype)


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world [..., 4, 4] -> OpenCV camera-to-world (the flip is its own inverse)."""
    return c2w @ _CV_GL_FLIP.astype(c2w.dtype)


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    """Rigid inverse of camera-to-world poses [..., 4, 4] -> world-to-camera [..., 4, 4]."""
    rot_t = np.swapaxes(c2w[..., :3, :3], -1, -2)
    w2c = np.zeros_like(c2w)
    w2c[..., :3, :3] = rot_t
    w2c[..., :3, 3] = -(rot_t @ c2w[..., :3, 3:4])[..., 0]
    w2c[..., 3, 3] = 1
    return w2c


def w2c_to_c2w(w2c: np.ndarray) -> np.ndarray:
    """World-to-camera [..., 4, 4] -> camera-to-world [..., 4, 4] (the rigid inverse is symmetric)."""
    return c2w_to_w2c(w2c)


def project(
    points: np.ndarray,  # [N, 3] world
    intrinsics: np.ndarray,  # [4]
    c2w: np.ndarray,  # [4, 4]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) with pixel centres at +0.5, and camera depth: ([N, 2], [N])."""
    w2c = c2w_to_w2c(np.asarray(c2w, dtype=np.float64))
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    fx, fy, cx, cy = np.asarray(intrinsics, dtype=np.float64)
    z = cam[:, 2]
    uv = np.stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy], axis=1)
    return uv, z
