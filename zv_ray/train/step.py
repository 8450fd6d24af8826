"""The one training step (predict, loss, backward, clip or skip) and what it needs: the optimizer, the learning
rate, the perceptual network. The Ray Train loop, benchmarks/learn.py and scripts/gpu_check.py all call
`train_step`, so what they time or tune is what trains."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from zv_ray.config import RunConfig, TrainConfig
from zv_ray.inference.views import PosedViews
from zv_ray.train.schedule import lr_at


@dataclass(frozen=True)
class StepOutcome:
    grad_norm: float  # total gradient norm before clipping (inf/nan when non-finite)
    skipped: bool  # True: weights and optimizer state untouched


@dataclass(frozen=True)
class StepResult:
    loss: float
    terms: dict[str, float]  # "mse", "perceptual"
    pred: torch.Tensor  # [b, V, 3, H, W] the last micro-batch's renders, detached
    outcome: StepOutcome
    lr: float
    tile_intersections: int | None  # the largest gsplat call's tile intersections (None: the torch rasterizer)


def _unmarked(part: str) -> None:
    pass


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: PosedViews | Sequence[PosedViews],
    cfg: RunConfig,
    step: int,
    perceptual_net: torch.nn.Module | None,
    *,
    lr: float | None = None,
    mark: Callable[[str], None] = _unmarked,
) -> StepResult:
    """One optimizer step at `step` over a batch, or over this worker's micro-batches of it (gradient accumulation):
    the scheduled learning rate (or `lr`); per micro-batch, predict and render every view, MSE +
    loss.perceptual_weight x perceptual (from loss.perceptual_start_step on), backward with the loss weighted by the
    micro-batch's share of the worker's samples (DDP then averages equal shares over workers: the gradient of the
    mean over the global batch), all-reducing only after the last; then clip to train.grad_clip or skip a
    non-finite / exploding step. `mark(part)` is called after each part (profiling)."""
    from zv_ray.inference.predict import predict_and_render
    from zv_ray.losses.training_loss import reconstruction_loss

    tc = cfg.train
    micro = [batch] if isinstance(batch, PosedViews) else list(batch)
    if lr is None:
        lr = lr_at(step, lr=tc.lr, min_lr=tc.min_lr, warmup_steps=tc.warmup_steps, total_steps=tc.steps)
    set_lr(optimizer, lr)
    stats: dict[str, int] = {}
    perceptual = perceptual_net if step >= cfg.loss.perceptual_start_step else None
    total = sum(len(m.images) for m in micro)
    # Per micro-batch, its share and detached loss terms, read on the host once after the optimizer step: a read per
    # micro-batch would make the GPU wait for the host before the next micro-batch's forward.
    shares, logged = [], []
    for i, part in enumerate(micro):
        share = len(part.images) / total
        # DDP all-reduces on backward; accumulate locally until the last micro-batch.
        sync = contextlib.nullcontext() if i == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            pred = predict_and_render(model, part, cfg, stats)
            mark("model_and_render_forward")
            loss, terms = reconstruction_loss(pred.flatten(0, 1), part.images.flatten(0, 1), perceptual,
                                              cfg.loss.perceptual_weight)
            mark("loss_forward")
            (loss * share).backward()
            mark("backward")
        shares.append(share)
        logged.append({"loss": loss.detach(), **terms})
    outcome = clipped_step(params, optimizer, grad_clip=tc.grad_clip, skip_grad_norm=tc.skip_grad_norm)
    mark("clip_and_optimizer")
    term_sums = {k: sum(float(values[k]) * share for values, share in zip(logged, shares)) for k in logged[0]}
    loss_sum = term_sums.pop("loss")
    return StepResult(loss_sum, term_sums, pred.detach(), outcome, lr, stats.get("max_tile_intersections"))


def clipped_step(
    parameters: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float,
    skip_grad_norm: float | None,
) -> StepOutcome:
    """Clip to `grad_clip` (0 = no clipping) and step, unless the norm is non-finite or above `skip_grad_norm`
    (None: no threshold).

    Under DDP the gradients are already all-reduced here, so every rank takes the same decision.
    """
    max_norm = grad_clip if grad_clip > 0 else math.inf
    # error_if_nonfinite=False: a non-finite norm is the skip signal, not an exception.
    norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm, error_if_nonfinite=False))
    if not math.isfinite(norm) or (skip_grad_norm is not None and norm > skip_grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return StepOutcome(norm, skipped=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(norm, skipped=False)


def perceptual_net_for(cfg: RunConfig, device: torch.device | str) -> torch.nn.Module | None:
    """The frozen perceptual network the loss uses, or None when loss.perceptual_weight is 0."""
    from zv_ray.losses.training_loss import load_perceptual_loss

    return load_perceptual_loss(cfg.loss, device) if cfg.loss.perceptual_weight > 0 else None


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
