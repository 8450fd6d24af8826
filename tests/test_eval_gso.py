"""Real GSO objects load with their textures, normalize like Zeroverse and render under the eval protocol."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from conftest import GSO_DIR

from zv_ray.config import RunConfig
from zv_ray.data.meshes import is_textured, load_object, normalize_scene
from zv_ray.eval.gso import find_objects, object_name
from zv_ray.eval.protocol import EvalProtocol, heldout_cameras, input_cameras, protocol_cameras
from zv_ray.render.cameras import project

needs_gso = pytest.mark.skipif(not GSO_DIR.is_dir(), reason=f"shared GSO objects not found at {GSO_DIR}")


def test_input_views_follow_the_protocol():
    p = EvalProtocol()
    intrinsics, c2w = input_cameras(p, 64)
    centres = c2w[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.7, rtol=1e-5)
    np.testing.assert_allclose(np.degrees(np.arcsin(centres[:, 2] / 2.7)), 20.0, atol=1e-4)
    azimuths = np.degrees(np.arctan2(centres[:, 1], centres[:, 0])) % 360
    np.testing.assert_allclose(azimuths, [0, 90, 180, 270], atol=1e-4)
    np.testing.assert_allclose(intrinsics[0], [64 / 2 / np.tan(np.radians(25)), 64 / 2 / np.tan(np.radians(25)), 32, 32], rtol=1e-5)
    for k, pose in zip(intrinsics, c2w):  # every camera looks at the origin
        uv, z = project(np.zeros((1, 3)), k, pose)
        np.testing.assert_allclose(uv[0], [32, 32], atol=1e-3)
        assert z[0] == pytest.approx(2.7, rel=1e-5)


@pytest.mark.parametrize("num_inputs, expected", [(4, 60), (8, 56), (3, 63)])
def test_test_views_exclude_the_inputs(num_inputs, expected):
    p = EvalProtocol(num_inputs=num_inputs)
    test = heldout_cameras(p, 32)[1][:, :3, 3]
    inputs = input_cameras(p, 32)[1][:, :3, 3]
    assert len(test) == expected
    assert np.linalg.norm(test[:, None] - inputs[None], axis=-1).min() > 0.1
    k, c2w = protocol_cameras(p, 32)
    assert len(k) == len(c2w) == num_inputs + expected


def test_test_view_subset_is_spread_over_the_rig():
    test = heldout_cameras(EvalProtocol(num_test_views=8), 32)[1][:, :3, 3]
    elevations = np.round(np.degrees(np.arcsin(test[:, 2] / 2.7)))
    assert len(test) == 8 and set(elevations) == {0, 20, 40, 60}


def test_protocol_follows_the_checkpoint_config():
    cfg = RunConfig.model_validate({"train": {"num_input_views": 6, "num_target_views": 2}, "render": {"fov_deg": 40.0}})
    p = EvalProtocol.for_config(cfg)
    assert (p.num_inputs, p.fov_deg) == (6, 40.0)
    assert p.params()["protocol.test_elevations_deg"] == "[0.0, 20.0, 40.0, 60.0]"


def test_normalize_scene_centres_and_scales():
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    box.apply_translation((5.0, -3.0, 1.0))
    scene = normalize_scene(trimesh.Scene(box), 1.8)
    lo, hi = scene.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
    np.testing.assert_allclose(hi - lo, [1.8, 0.9, 0.45], rtol=1e-9)


def test_find_objects_rejects_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_objects(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no objects"):
        find_objects(tmp_path)


@needs_gso
def test_every_gso_object_loads_textured_and_renders():
    from zv_ray.render.renderer import Renderer

    paths = find_objects(GSO_DIR)
    assert len(paths) == 10
    intrinsics, c2w = protocol_cameras(EvalProtocol(num_test_views=4), 64)
    with Renderer(64) as renderer:
        for path in paths:
            scene = load_object(path, extent=1.8)
            name = object_name(path)
            assert is_textured(scene), name
            lo, hi = scene.bounds
            assert (hi - lo).max() == pytest.approx(1.8, rel=1e-6), name
            np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6, err_msg=name)

            views = renderer.render(scene, intrinsics, c2w)
            covered = views.alpha > 0  # [V, H, W]
            coverage = covered.mean(axis=(1, 2))
            assert (coverage > 0.002).all() and (coverage < 0.8).all(), (name, coverage)
            assert 0.03 < coverage.mean() < 0.6, (name, coverage)
            assert (views.rgb[~covered] == 255).all(), name  # white background
            # Flat shading: an untextured mesh renders as one colour; the scan's texture varies.
            assert views.rgb[covered].std(axis=0).max() > 8.0, name


def test_glb_keeps_its_texture_and_turns_y_up_to_z_up(tmp_path):
    from PIL import Image

    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    rng = np.random.default_rng(0)
    texture = Image.fromarray((rng.uniform(size=(16, 16, 3)) * 255).astype(np.uint8))
    box.visual = trimesh.visual.TextureVisuals(uv=rng.uniform(size=(len(box.vertices), 2)), image=texture)
    box.export(tmp_path / "box.glb")
    scene = load_object(tmp_path / "box.glb")
    assert is_textured(scene)
    lo, hi = scene.bounds
    np.testing.assert_allclose(hi - lo, [0.6, 1.8, 1.2], rtol=1e-6)  # glTF +Y (2 long) is our +Z
    lo, hi = load_object(tmp_path / "box.glb", up="z").bounds
    np.testing.assert_allclose(hi - lo, [0.6, 1.2, 1.8], rtol=1e-6)


@needs_gso
def test_ground_truth_and_splatting_share_camera_conventions():
    """Gaussians unprojected from the input views' depth, splatted at the test views, reproduce the renderer's
    test images: the eval's ground truth and the model's rendering path agree on cameras and pixels."""
    import torch

    from zv_ray.losses.metrics import psnr
    from zv_ray.render.rays import ray_directions
    from zv_ray.render.renderer import Renderer
    from zv_ray.splat.gaussians import Gaussians
    from zv_ray.splat.rasterize import render_gaussians

    res, n_in = 64, 4
    intrinsics, c2w = (torch.from_numpy(a) for a in protocol_cameras(EvalProtocol(num_test_views=8), res))
    with Renderer(res, depth=True) as renderer:
        views = renderer.render(load_object(GSO_DIR / "Nescafe_Momento_Mocha_Specialty_Coffee_Mix_8_ct" / "model.obj"),
                                intrinsics.numpy(), c2w.numpy())
    origins, dirs = ray_directions(intrinsics[:n_in], c2w[:n_in], res, res)  # [4, H, W, 3]
    along = torch.from_numpy(views.depth[:n_in]) / (dirs * c2w[:n_in, None, None, :3, 2]).sum(-1)  # camera z -> ray length
    covered = torch.from_numpy(views.alpha[:n_in] > 0)
    means = (origins + dirs * along[..., None])[covered][None]  # [1, N, 3]
    n = means.shape[1]
    gaussians = Gaussians(
        means=means, scales=torch.full((1, n, 3), 0.015), quats=torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
        opacities=torch.full((1, n), 0.99), colors=torch.from_numpy(views.rgb[:n_in]).float().div(255)[covered][None],
    )
    rgb, alpha = render_gaussians(gaussians, intrinsics[None, n_in:], c2w[None, n_in:], res, res, [1.0, 1.0, 1.0])
    target = torch.from_numpy(views.rgb[n_in:]).float().div(255).permute(0, 3, 1, 2)
    ours = psnr(rgb[0].permute(0, 3, 1, 2), target)
    blank = psnr(torch.ones_like(target), target)
    assert (ours > blank + 4).all(), (ours, blank)
    splat_mask, true_mask = alpha[0, ..., 0].numpy() > 0.5, views.alpha[n_in:] > 0
    iou = (splat_mask & true_mask).sum((1, 2)) / (splat_mask | true_mask).sum((1, 2))
    assert (iou > 0.8).all(), iou
