"""The training loss: MSE + w * perceptual term, LPIPS(VGG16) or GS-LRM's VGG19 feature loss (loss.perceptual).

GS-LRM's own perceptual term (w = 0.5; LRM-Zero 0.2 on Zeroverse) is the VGG19 feature loss in the style of
Chen & Koltun (`zv_ray.losses.vgg19`); LPIPS has another scale, so the paper's weights do not carry over
one-to-one to it.

The MSE is taken on the unclamped render: clamping it to [0, 1] would stop the gradient of any pixel that
overshoots white (colours are clamped at 0 only); the metrics clamp.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zv_ray.config import LossConfig


def resolve_perceptual_weights(cfg: LossConfig) -> str:
    """The weights file load_perceptual_loss would read, checked cheaply (for pre-flight checks); raises
    PerceptualWeightsMissing naming the file and the fix."""
    if cfg.perceptual == "vgg19":
        from zv_ray.losses.vgg19 import resolve_vgg19_weights

        return resolve_vgg19_weights(cfg.vgg19_weights)
    from zv_ray.losses.perceptual import resolve_vgg_weights

    return resolve_vgg_weights(cfg.vgg_weights)


def load_perceptual_loss(cfg: LossConfig, device: torch.device | str) -> nn.Module:
    """The network of loss.perceptual, frozen, with its weights from the configured file (or the torch hub
    cache); raises PerceptualWeightsMissing naming the file and the fix."""
    if cfg.perceptual == "vgg19":
        from zv_ray.losses.vgg19 import load_vgg19_loss

        return load_vgg19_loss(cfg.vgg19_weights, device=device)
    from zv_ray.losses.perceptual import load_lpips

    return load_lpips(cfg.vgg_weights, device=device)


def reconstruction_loss(
    pred: Tensor,  # [..., 3, H, W] rendered, in [0, 1]
    target: Tensor,  # [..., 3, H, W]
    perceptual_net: nn.Module | None,  # from load_perceptual_loss; None (or weight 0): MSE only
    perceptual_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-> (total, {"mse", "perceptual"}) scalars; the dict's values are detached, for logging."""
    mse = F.mse_loss(pred, target)
    total = mse
    parts = {"mse": mse.detach()}
    if perceptual_net is not None and perceptual_weight > 0:
        perceptual = perceptual_net(pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])).mean()
        total = total + perceptual_weight * perceptual
        parts["perceptual"] = perceptual.detach()
    else:
        parts["perceptual"] = mse.new_zeros(())
    return total, parts
