"""Evaluation metrics on image pairs with known answers, and how they are averaged and reported."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rich.console import Console
from skimage.metrics import structural_similarity

from zv_ray.eval.evaluate import image_scores, mean_scores, summarize
from zv_ray.eval.report import comparison_grid, results_table


def _smooth_images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:  # [n, 3, size, size] in [0.3, 0.7]
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return 0.3 + 0.4 * torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_identical_images_score_perfectly():
    images = _smooth_images(3)
    scores = image_scores(images, images.clone())
    assert torch.isinf(scores["psnr"]).all() and (scores["psnr"] > 0).all()
    torch.testing.assert_close(scores["ssim"], torch.ones(3), atol=1e-5, rtol=0)
    assert "lpips" not in scores


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_known_noise_gives_its_psnr(sigma):
    target = _smooth_images(4, seed=1)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(2)) * sigma
    pred = target + noise  # stays inside [0, 1]: no clamping changes the error
    assert 0 <= pred.min() and pred.max() <= 1
    psnr = image_scores(pred, target)["psnr"]
    exact = -10 * torch.log10((noise**2).flatten(1).mean(1))
    torch.testing.assert_close(psnr, exact, atol=1e-3, rtol=0)
    assert psnr.mean().item() == pytest.approx(-20 * math.log10(sigma), abs=0.1)  # 40 dB at 0.01, 26.02 dB at 0.05


def test_ssim_matches_the_skimage_reference():
    target = _smooth_images(2, seed=3)
    pred = (target + 0.08 * torch.randn(target.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    ours = image_scores(pred, target)["ssim"]
    reference = [
        # The reference recipe: skimage, 11 px window, Gaussian weights, data range 1.
        structural_similarity(p.permute(1, 2, 0).double().numpy(), t.permute(1, 2, 0).double().numpy(), win_size=11,
                              gaussian_weights=True, data_range=1.0, channel_axis=-1)
        for p, t in zip(pred, target)
    ]
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
    assert (ours < 0.99).all()


def test_predictions_are_clamped_before_scoring():
    target = torch.ones(1, 3, 16, 16)
    assert torch.isinf(image_scores(target * 1.5, target)["psnr"]).all()


def test_lpips_network_is_used_when_given():
    images = _smooth_images(20)
    calls = []

    def fake_lpips(pred, target):  # [n, 3, H, W] -> [n]
        calls.append(len(pred))
        return (pred - target).abs().flatten(1).mean(1)

    scores = image_scores(images, images * 0.5, fake_lpips)
    assert scores["lpips"].shape == (20,) and sum(calls) == 20 and max(calls) <= 16


def test_means_over_objects_and_a_missing_metric():
    white = {"white_psnr": 12.0, "white_ssim": 0.4, "white_lpips": None}
    rows = [{"object": "a", "psnr": 10.0, "ssim": 0.5, "lpips": None, **white, "psnr_over_white": -2.0},
            {"object": "b", "psnr": 20.0, "ssim": 0.7, "lpips": None, **white, "psnr_over_white": 8.0}]
    assert summarize(rows, "gso") == pytest.approx(
        {"gso/psnr": 15.0, "gso/ssim": 0.6, "gso/white_psnr": 12.0, "gso/white_ssim": 0.4, "gso/psnr_over_white": 3.0})
    assert mean_scores(rows)["lpips"] is None and mean_scores(rows)["psnr_over_white"] == pytest.approx(3.0)
    console = Console(record=True, width=160)
    console.print(results_table("gso", rows))
    text = console.export_text()
    for needle in ("15.00", "0.6000", "n/a", "white PSNR", "12.00", "PSNR - white", "+3.00", "-2.00"):
        assert needle in text, needle


def test_every_object_is_scored_beside_the_all_white_image():
    """The white baseline is the test views' own score for an all-white frame; the margin is PSNR minus it."""
    from zv_ray.config import RunConfig
    from zv_ray.eval.evaluate import eval_mode, evaluate_object
    from zv_ray.eval.prepare import EvalObject
    from zv_ray.inference.views import object_views
    from zv_ray.model import GSLRM
    from zv_ray.render.cameras import ring_cameras

    cfg = RunConfig.model_validate({"model": {"width": 32, "depth": 1, "num_heads": 2, "bf16": False},
                                    "train": {"resolution": 32, "warmup_steps": 0}})
    intrinsics, c2w = ring_cameras(6, [20.0], 2.7, 50.0, 32)
    rgba = np.full((6, 32, 32, 4), 255, dtype=np.uint8)
    rgba[:, 8:24, 8:24, :3] = 40  # a dark square on white in every view
    torch.manual_seed(0)
    with eval_mode(GSLRM(cfg.model)) as model:
        result = evaluate_object(model, EvalObject("square", object_views(rgba, intrinsics, c2w, 4, 32)), cfg)
    target = torch.from_numpy(rgba[4:, :, :, :3]).permute(0, 3, 1, 2).float() / 255
    white = image_scores(torch.ones_like(target), target)
    assert result.white["psnr"] == pytest.approx(float(white["psnr"].mean()), abs=1e-4)
    assert result.white["ssim"] == pytest.approx(float(white["ssim"].mean()), abs=1e-4)
    assert result.margin == pytest.approx(result.psnr - result.white["psnr"])
    scores = result.scores()
    assert scores["white_psnr"] == result.white["psnr"] and scores["psnr_over_white"] == result.margin


def test_comparison_grid_layout():
    grid = comparison_grid(torch.zeros(4, 3, 8, 8), torch.zeros(10, 3, 8, 8), torch.ones(10, 3, 8, 8), columns=8)
    # inputs row, then (prediction, ground truth) rows for test views 1-8 and 9-10; 1 px border per tile.
    assert grid.shape == (5 * 10, 8 * 10, 3) and grid.dtype == np.uint8
    assert grid[1:9, 1:9].max() == 0 and grid[21:29, 1:9].min() == 255  # input tile, ground-truth tile
    assert (grid[1:9, 41:49] == 255).all()  # empty cell after the 4 inputs
