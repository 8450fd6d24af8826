"""One forward pass: Gaussians predicted from a batch's input views, splatted at every view of the batch."""

from __future__ import annotations

import torch

from zv_ray.config import RunConfig
from zv_ray.inference.views import ViewBatch
from zv_ray.splat.rasterize import render_gaussians


def predict_and_render(model: torch.nn.Module, batch: ViewBatch, cfg: RunConfig) -> torch.Tensor:
    """Gaussians from the input views, splatted at every view of the batch: [B, V, 3, H, W]."""
    device = batch.images.device
    use_bf16 = cfg.model.bf16 and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        gaussians = model(batch.input_images, batch.input_intrinsics, batch.input_c2w)
    res = batch.images.shape[-1]
    background = torch.tensor(cfg.train.background, dtype=torch.float32, device=device)
    rgb, _alpha = render_gaussians(gaussians.float(), batch.intrinsics, batch.c2w, res, res, background, cfg.model.rasterizer)
    return rgb.permute(0, 1, 4, 2, 3)  # [B, V, H, W, 3] -> [B, V, 3, H, W]
