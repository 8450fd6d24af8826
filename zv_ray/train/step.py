"""One optimizer step with gradient clipping and skipping of exploding steps (GS-LRM / LRM-Zero stability)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zv_ray.config import TrainConfig


@dataclass(frozen=True)
class StepOutcome:
    grad_norm: float  # total gradient norm before clipping (inf/nan when non-finite)
    skipped: bool  # True: weights and optimizer state untouched


def clipped_step(
    parameters: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float,
    skip_grad_norm: float,
) -> StepOutcome:
    """Clip to `grad_clip` (0 = no clipping) and step, unless the norm is non-finite or above `skip_grad_norm`.

    Under DDP the gradients are already all-reduced here, so every rank takes the same decision.
    """
    max_norm = grad_clip if grad_clip > 0 else math.inf
    # error_if_nonfinite=False: a non-finite norm is the skip signal, not an exception.
    norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm, error_if_nonfinite=False))
    if not math.isfinite(norm) or norm > skip_grad_norm:
        optimizer.zero_grad(set_to_none=True)
        return StepOutcome(norm, skipped=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(norm, skipped=False)


def build_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's parameters where they live now (after any device move), weight decay on
    matrices only (nanoGPT's configure_optimizers): LayerNorm gains (and any bias) are not pulled to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
