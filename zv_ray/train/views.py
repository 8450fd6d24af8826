"""Turn a batch of rendered objects into model inputs and supervision views.

GS-LRM samples views per object: `num_input_views` inputs fed to the model, plus `num_target_views`
novel views; all of them (inputs included) are supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ViewBatch:
    images: Tensor  # [B, V, 3, H, W] RGB on white in [0, 1]; the first `num_inputs` views are the inputs
    alphas: Tensor  # [B, V, 1, H, W] in [0, 1]
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

    def to(self, device: torch.device | str) -> "ViewBatch":
        return ViewBatch(
            self.images.to(device), self.alphas.to(device), self.intrinsics.to(device), self.c2w.to(device), self.num_inputs
        )


def pick_view_indices(num_views: int, num_inputs: int, num_targets: int, batch: int, generator: torch.Generator) -> Tensor:
    """Distinct random views per object, inputs first: [B, num_inputs + num_targets] long."""
    total = num_inputs + num_targets
    if total > num_views:
        raise ValueError(f"asked for {total} views per object but objects have only {num_views}")
    return torch.stack([torch.randperm(num_views, generator=generator)[:total] for _ in range(batch)])


def fixed_view_indices(num_views: int, num_inputs: int, num_targets: int, batch: int) -> Tensor:
    """Deterministic views for evaluation: inputs spread over the object's views, targets from the rest."""
    total = num_inputs + num_targets
    if total > num_views:
        raise ValueError(f"asked for {total} views per object but objects have only {num_views}")
    inputs = torch.linspace(0, num_views - 1, num_inputs).round().long()
    rest = torch.tensor([v for v in range(num_views) if v not in set(inputs.tolist())], dtype=torch.long)
    return torch.cat([inputs, rest[:num_targets]]).expand(batch, total)


def make_view_batch(
    rgba: Tensor,  # [B, Vall, H, W, 4] uint8
    intrinsics: Tensor,  # [B, Vall, 4]
    c2w: Tensor,  # [B, Vall, 4, 4]
    indices: Tensor,  # [B, V] long
    num_inputs: int,
    resolution: int,
) -> ViewBatch:
    """Gather the chosen views, scale to [0, 1] and resize to `resolution` (intrinsics scaled to match)."""
    gather = lambda t: torch.stack([t[b, indices[b]] for b in range(t.shape[0])])  # noqa: E731
    rgba_sel = gather(rgba).float().div(255.0).permute(0, 1, 4, 2, 3)  # [B, V, 4, H, W]
    K = gather(intrinsics).float()
    poses = gather(c2w).float()
    B, V, _, H, W = rgba_sel.shape
    if (H, W) != (resolution, resolution):
        rgba_sel = F.interpolate(rgba_sel.flatten(0, 1), size=(resolution, resolution), mode="area").unflatten(0, (B, V))
        scale = torch.tensor([resolution / W, resolution / H, resolution / W, resolution / H], dtype=K.dtype)
        K = K * scale
    return ViewBatch(rgba_sel[:, :, :3].contiguous(), rgba_sel[:, :, 3:].contiguous(), K, poses, num_inputs)
