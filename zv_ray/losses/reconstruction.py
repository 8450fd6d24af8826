"""The training loss: MSE + w * LPIPS(VGG16).

GS-LRM's own perceptual term (w = 0.5; LRM-Zero 0.2 on Zeroverse) is a VGG19 feature loss in the style of
Chen & Koltun (weighted L1 between VGG19 activations at 5 layers), not LPIPS; LPIPS stands in for it here
(no VGG19 weights are shipped), so its weight does not carry over one-to-one.

The MSE is taken on the unclamped render: clamping it to [0, 1] would stop the gradient of any pixel that
overshoots white (colours are clamped at 0 only); the metrics clamp.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from zv_ray.losses.perceptual import LPIPS


def reconstruction_loss(
    pred: Tensor,  # [..., 3, H, W] rendered, in [0, 1]
    target: Tensor,  # [..., 3, H, W]
    lpips_net: LPIPS | None,  # None (or weight 0): MSE only
    perceptual_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-> (total, {"mse", "lpips"}) scalars; the dict's values are detached, for logging."""
    mse = F.mse_loss(pred, target)
    total = mse
    parts = {"mse": mse.detach()}
    if lpips_net is not None and perceptual_weight > 0:
        perceptual = lpips_net(pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])).mean()
        total = total + perceptual_weight * perceptual
        parts["lpips"] = perceptual.detach()
    else:
        parts["lpips"] = mse.new_zeros(())
    return total, parts
