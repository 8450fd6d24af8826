"""PSNR and SSIM on known cases."""

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from zv_ray.losses import psnr, ssim


def test_psnr_identical_is_inf_and_known_noise_gives_its_psnr():
    gen = torch.Generator().manual_seed(0)
    target = 0.25 + 0.5 * torch.rand(3, 3, 16, 16, generator=gen)
    assert torch.isinf(psnr(target, target)).all()
    signs = torch.randint(0, 2, target.shape, generator=gen) * 2 - 1
    for level in (0.1, 0.03):
        # +-level everywhere: MSE = level^2 exactly, PSNR = -20 log10(level)
        got = psnr(target + level * signs, target)
        torch.testing.assert_close(got, torch.full((3,), -20 * math.log10(level)), atol=1e-3, rtol=0)


def test_psnr_clamps_to_unit_range():
    target = torch.ones(1, 3, 8, 8)
    assert torch.isinf(psnr(target + 0.5, target)).all()  # 1.5 clamps to 1


def test_ssim_identical_is_one_and_matches_skimage():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    torch.testing.assert_close(ssim(target, target), torch.ones(2))
    noisy = (target + 0.1 * torch.randn(2, 3, 32, 32, generator=gen)).clamp(0, 1)
    got = ssim(noisy, target)
    assert (got < 0.99).all() and (got > 0).all()
    ref = structural_similarity(
        noisy[1].numpy().astype("float64"), target[1].numpy().astype("float64"),
        win_size=11, gaussian_weights=True, channel_axis=0, data_range=1.0,
    )
    assert got[1].item() == pytest.approx(ref, abs=1e-6)
