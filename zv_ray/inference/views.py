"""Posed views, the one type training, evaluation, `zv-ray reconstruct` and the viewer pass around, and how
rendered objects become them.

GS-LRM samples views per object: `num_input_views` inputs fed to the model, plus `num_target_views`
novel views near the inputs; all of them (inputs included) are supervised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zv_ray.config import TrainConfig


@dataclass
class PosedViews:
    """B objects' images with their cameras: a training batch, or one object (B = 1) to score, reconstruct or show."""

    images: Tensor  # [B, V, 3, H, W] RGB on white in [0, 1]; the first `num_inputs` views are the inputs
    intrinsics: Tensor  # [B, V, 4] fx, fy, cx, cy at the batch resolution
    c2w: Tensor  # [B, V, 4, 4] OpenCV camera-to-world
    num_inputs: int

    @property
    def input_images(self) -> Tensor:  # [B, Vin, 3, H, W]
        return self.images[:, : self.num_inputs]

    @property
    def input_intrinsics(self) -> Tensor:  # [B, Vin, 4]
        return self.intrinsics[:, : self.num_inputs]

    @property
    def input_c2w(self) -> Tensor:  # [B, Vin, 4, 4]
        return self.c2w[:, : self.num_inputs]

    def to(self, device: torch.device | str) -> "PosedViews":
        return PosedViews(self.images.to(device), self.intrinsics.to(device), self.c2w.to(device), self.num_inputs)


def pick_view_indices(
    c2w: Tensor,  # [B, Vall, 4, 4] camera-to-world of every rendered view
    num_inputs: int,
    num_targets: int,
    generator: torch.Generator,
    rule: Literal["near_input", "uniform"] = "near_input",
    max_angle_deg: float = 60.0,
    input_rule: Literal["random", "spread"] = "random",
) -> Tensor:  # [B, num_inputs + num_targets] long, inputs first, distinct per object
    """Inputs drawn uniformly ("random"), or "spread": the first at random, each next one the view whose
    direction is farthest from every input so far (how sparse-view benchmarks place their inputs around
    the object). Targets drawn uniformly from the views whose viewing direction is within `max_angle_deg`
    of some input (GS-LRM: supervise where the inputs overlap), topped up with the nearest others when
    too few are; rule "uniform" draws targets from all remaining views."""
    batch, num_views = c2w.shape[:2]
    total = num_inputs + num_targets
    if total > num_views:
        raise ValueError(f"asked for {total} views per object but objects have only {num_views}")
    # On the CPU, with the generator's randperm: cameras may arrive on the GPU (Ray Train's CUDA batches).
    forward = F.normalize(c2w[..., :3, 2].detach().cpu().double(), dim=-1)  # [B, Vall, 3] OpenCV +z: viewing direction
    rows = []
    for b in range(batch):
        order = torch.randperm(num_views, generator=generator)
        if input_rule == "spread":
            order = _spread_first(forward[b], order, num_inputs)
        inputs, rest = order[:num_inputs], order[num_inputs:]
        if rule == "near_input":
            cos = (forward[b, rest] @ forward[b, inputs].T).amax(dim=1)  # [Vrest] to the nearest input
            near = cos >= math.cos(math.radians(max_angle_deg))
            # Near views keep their random order; the others follow, nearest first.
            far = rest[~near][torch.argsort(cos[~near], descending=True, stable=True)]
            rest = torch.cat([rest[near], far])
        rows.append(torch.cat([inputs, rest[:num_targets]]))
    return torch.stack(rows)


def pick_training_views(c2w: Tensor, tc: TrainConfig, generator: torch.Generator) -> Tensor:  # [B, V] long
    """pick_view_indices under the run's rules (train.num_input_views, num_target_views, input_views,
    target_views, target_max_angle_deg): the one choice every trainer, actor and benchmark makes."""
    return pick_view_indices(c2w, tc.num_input_views, tc.num_target_views, generator, rule=tc.target_views,
                             max_angle_deg=tc.target_max_angle_deg, input_rule=tc.input_views)


def _spread_first(forward: Tensor, order: Tensor, count: int) -> Tensor:  # [Vall] the same views, reordered
    """`order` with its first `count` entries replaced by farthest-point picks over viewing directions
    ([Vall, 3] unit), starting from order[0]; ties keep `order`'s random ranking."""
    chosen = [int(order[0])]
    for _ in range(count - 1):
        left = order[~torch.isin(order, torch.tensor(chosen))]
        nearest = (forward[left] @ forward[chosen].T).amax(dim=1)  # [Vleft] cosine to the closest input
        chosen.append(int(left[torch.argmin(nearest)]))
    picked = torch.tensor(chosen)
    return torch.cat([picked, order[~torch.isin(order, picked)]])


def make_view_batch(
    images: Tensor,  # [B, Vall, H, W, C] uint8 RGB on white; C = 3, or 4 with an alpha that nothing reads
    intrinsics: Tensor,  # [B, Vall, 4]
    c2w: Tensor,  # [B, Vall, 4, 4]
    indices: Tensor | None,  # [B, V] long; None: every view in order (the online stream's actors picked them)
    num_inputs: int,
    resolution: int,
    device: torch.device | str | None = None,
) -> PosedViews:
    """Gather the chosen views and move them to `device` as uint8 (a quarter of float32's bytes), then scale
    to [0, 1] and resize to `resolution` there (intrinsics scaled to match)."""
    if indices is not None:
        gather = lambda t: torch.stack([t[b, indices[b]] for b in range(t.shape[0])])  # noqa: E731
        images, intrinsics, c2w = gather(images), gather(intrinsics), gather(c2w)
    if device is not None:
        images, intrinsics, c2w = (t.to(device, non_blocking=True) for t in (images, intrinsics, c2w))
    rgb = images[..., :3].permute(0, 1, 4, 2, 3).float().div(255.0)  # [B, V, 3, H, W]
    K = intrinsics.float()
    B, V, _, H, W = rgb.shape
    if (H, W) != (resolution, resolution):
        rgb = F.interpolate(rgb.flatten(0, 1), size=(resolution, resolution), mode="area").unflatten(0, (B, V))
        scale = torch.tensor([resolution / W, resolution / H, resolution / W, resolution / H], dtype=K.dtype, device=K.device)
        K = K * scale
    return PosedViews(rgb.contiguous(), K, c2w.float(), num_inputs)


def uint8_images(images: Tensor) -> np.ndarray:  # [..., 3, H, W] in [0, 1] -> [..., H, W, 3] uint8
    """Views as 8-bit pictures again (clamped: renders overshoot white), the inverse of make_view_batch's scaling."""
    return (images.detach().float().clamp(0, 1).movedim(-3, -1).cpu().numpy() * 255).round().astype(np.uint8)


def object_views(
    images: np.ndarray,  # [V, H, W, C] uint8 RGB on white, inputs first
    intrinsics: np.ndarray,  # [V, 4]
    c2w: np.ndarray,  # [V, 4, 4]
    num_inputs: int,
    resolution: int,
) -> PosedViews:
    """One object's views (B = 1) at `resolution`, through make_view_batch like a training batch."""
    arrays = (torch.from_numpy(a)[None] for a in (images, intrinsics, c2w))
    return make_view_batch(*arrays, None, num_inputs, resolution)
