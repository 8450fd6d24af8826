"""Camera layouts, the OpenCV pose convention and its converters, and Plücker rays (pure math, no GL)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zv_ray.config import RenderConfig
from zv_ray.render.cameras import (
    c2w_to_w2c,
    cameras_for,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    project,
    ring_cameras,
    sample_cameras,
    w2c_to_c2w,
)
from zv_ray.render.rays import plucker_rays, ray_directions


def test_intrinsics_match_the_official_50_degree_camera():
    fx, fy, cx, cy = intrinsics_from_fov(50.0, 512, 512)
    assert fx == fy == pytest.approx(548.99, abs=0.01)
    assert (cx, cy) == (256, 256)


def test_look_at_is_opencv_with_z_up():
    c2w = look_at(np.array([0.0, -2.0, 0.0]), np.zeros(3))  # standing at -Y, looking at +Y
    rot = c2w[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot[:, 0], [1, 0, 0], atol=1e-12)  # x right
    np.testing.assert_allclose(rot[:, 1], [0, 0, -1], atol=1e-12)  # y down = world -Z
    np.testing.assert_allclose(rot[:, 2], [0, 1, 0], atol=1e-12)  # z forward, at the target
    # A point above the target appears above the image centre (smaller v).
    uv, z = project(np.array([[0.0, 0.0, 0.5]]), intrinsics_from_fov(50, 64, 64), c2w)
    assert uv[0, 0] == pytest.approx(32) and uv[0, 1] < 32 and z[0] == pytest.approx(2.0)


def test_look_at_from_the_pole_stays_orthonormal():
    rot = look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3))[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot[:, 2], [0, 0, -1], atol=1e-12)


def test_random_layout_follows_the_official_bounds():
    cfg = RenderConfig(num_views=400, resolution=64)
    intrinsics, c2w = sample_cameras(np.random.default_rng(0), cfg)
    assert intrinsics.shape == (400, 4) and c2w.shape == (400, 4, 4)
    assert intrinsics.dtype == c2w.dtype == np.float32
    centres = c2w[:, :3, 3].astype(np.float64)
    radius = np.linalg.norm(centres, axis=1)
    assert radius.min() >= 1.5 - 1e-5 and radius.max() <= 2.8 + 1e-5
    assert centres[:, 2].min() > -0.75 and centres[:, 2].max() < 1.6
    # Every camera looks at the origin: the optical axis is the unit vector towards it.
    np.testing.assert_allclose(c2w[:, :3, 2], -centres / radius[:, None], atol=1e-5)
    # Same generator state, same cameras.
    np.testing.assert_array_equal(sample_cameras(np.random.default_rng(0), cfg)[1], c2w)


def test_unreachable_height_range_is_a_clear_error():
    cfg = RenderConfig(height_range=(3.0, 4.0))
    with pytest.raises(ValueError, match="height_range"):
        sample_cameras(np.random.default_rng(0), cfg)


def test_ring_layout_elevations_and_azimuths():
    _, c2w = ring_cameras(8, [0.0, 30.0], 2.7, 50.0, 64)
    centres = c2w[:, :3, 3].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.7, rtol=1e-6)
    elevation = np.rad2deg(np.arcsin(centres[:, 2] / 2.7))
    np.testing.assert_allclose(elevation, [0] * 4 + [30] * 4, atol=1e-4)
    azimuth = np.rad2deg(np.arctan2(centres[:4, 1], centres[:4, 0])) % 360
    np.testing.assert_allclose(azimuth, [0, 90, 180, 270], atol=1e-4)
    cfg = RenderConfig(layout="ring", num_views=8, ring_elevations_deg=[0.0, 30.0], ring_radius=2.7, resolution=64)
    np.testing.assert_array_equal(cameras_for(np.random.default_rng(5), cfg)[1], c2w)
    with pytest.raises(ValueError, match="multiple"):
        ring_cameras(7, [0.0, 30.0], 2.7, 50.0, 64)


def test_pose_converters_round_trip():
    _, c2w = sample_cameras(np.random.default_rng(1), RenderConfig(num_views=6, resolution=32))
    c2w = c2w.astype(np.float64)
    w2c = c2w_to_w2c(c2w)
    np.testing.assert_allclose(w2c @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-6)
    np.testing.assert_allclose(w2c_to_c2w(w2c), c2w, atol=1e-6)
    gl = opencv_to_opengl(c2w)
    np.testing.assert_allclose(opengl_to_opencv(gl), c2w, atol=1e-12)
    # OpenGL looks down its -z and has +y up: the same optical axis, the opposite image-down.
    np.testing.assert_allclose(-gl[:, :3, 2], c2w[:, :3, 2], atol=1e-12)
    np.testing.assert_allclose(gl[:, :3, 1], -c2w[:, :3, 1], atol=1e-12)
    # The official camera file stores w2c in OpenCV: a world point's camera z is its depth.
    point = np.array([0.1, -0.2, 0.3, 1.0])
    depth = (w2c @ point)[:, 2]
    np.testing.assert_allclose(depth, ((point[:3] - c2w[:, :3, 3]) * c2w[:, :3, 2]).sum(-1), atol=1e-6)


def test_plucker_rays_match_a_direct_computation():
    height, width = 6, 5
    intrinsics, c2w = sample_cameras(np.random.default_rng(2), RenderConfig(num_views=3, resolution=8))
    intrinsics[:, 2] = 2.4  # a non-centred principal point catches swapped axes
    got = plucker_rays(torch.from_numpy(intrinsics).double(), torch.from_numpy(c2w).double(), height, width)
    assert got.shape == (3, 6, height, width)
    for view in range(3):
        fx, fy, cx, cy = intrinsics[view].astype(np.float64)
        rot, origin = c2w[view, :3, :3].astype(np.float64), c2w[view, :3, 3].astype(np.float64)
        for v in range(height):
            for u in range(width):
                d = rot @ np.array([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1.0])
                d /= np.linalg.norm(d)
                want = np.concatenate([np.cross(origin, d), d])
                np.testing.assert_allclose(got[view, :, v, u].numpy(), want, atol=1e-6)


def test_pixel_rays_pass_through_the_points_that_project_there():
    intrinsics, c2w = sample_cameras(np.random.default_rng(3), RenderConfig(num_views=4, resolution=32))
    origins, dirs = ray_directions(torch.from_numpy(intrinsics).double(), torch.from_numpy(c2w).double(), 32, 32)
    point = np.array([0.05, -0.1, 0.2])
    for view in range(4):
        uv, _ = project(point[None], intrinsics[view], c2w[view])
        u, v = np.floor(uv[0]).astype(int)
        o, d = origins[view, v, u].numpy(), dirs[view, v, u].numpy()
        miss = np.linalg.norm(np.cross(point - o, d))  # distance from the point to the pixel-centre ray
        pixel = np.linalg.norm(point - o) / intrinsics[view, 0]  # one pixel at the point's distance
        assert miss < pixel
