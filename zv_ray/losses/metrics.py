"""Image metrics as FaceLift's gslrm/model/utils_metrics.py computes them: PSNR on images clamped to [0, 1],
SSIM from scikit-image (window 11, Gaussian weights, data range 1, its defaults otherwise), LPIPS with VGG (see perceptual.py)."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from zv_ray.losses.perceptual import LPIPS


@torch.no_grad()
def psnr(
    pred: Tensor,  # [B, 3, H, W]
    target: Tensor,  # [B, 3, H, W]
) -> Tensor:  # [B] dB (inf where identical)
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def ssim(
    pred: Tensor,  # [B, 3, H, W]
    target: Tensor,  # [B, 3, H, W]
) -> Tensor:  # [B]
    a = pred.clamp(0, 1).permute(0, 2, 3, 1).double().cpu().numpy()
    b = target.clamp(0, 1).permute(0, 2, 3, 1).double().cpu().numpy()
    values = [
        structural_similarity(x, y, win_size=11, gaussian_weights=True, data_range=1.0, channel_axis=-1)
        for x, y in zip(a, b)
    ]
    return torch.tensor(np.asarray(values), dtype=torch.float32)


@torch.no_grad()
def lpips(
    net: LPIPS,  # from load_lpips
    pred: Tensor,  # [B, 3, H, W]
    target: Tensor,  # [B, 3, H, W]
) -> Tensor:  # [B]
    return net(pred.clamp(0, 1), target.clamp(0, 1)).float().cpu()
