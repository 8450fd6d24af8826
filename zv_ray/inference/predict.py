"""One forward pass: Gaussians predicted from the input views of posed views, splatted at all of their views."""

from __future__ import annotations

import torch

from zv_ray.config import RunConfig
from zv_ray.inference.views import PosedViews
from zv_ray.splat.gaussians import Gaussians
from zv_ray.splat.rasterize import render_gaussians


def predict_gaussians(model: torch.nn.Module, views: PosedViews, cfg: RunConfig) -> Gaussians:
    """Gaussians (float32) from the input views, under bf16 autocast where model.bf16 asks for it on CUDA."""
    device = views.images.device
    use_bf16 = cfg.model.bf16 and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        gaussians = model(views.input_images, views.input_intrinsics, views.input_c2w)
    return gaussians.float()


def render_views(gaussians: Gaussians, views: PosedViews, cfg: RunConfig,
                 stats: dict[str, int] | None = None) -> torch.Tensor:  # [B, V, 3, H, W]
    """The Gaussians splatted at every view, on the training background (`stats`: see render_gaussians)."""
    res = views.images.shape[-1]
    background = torch.tensor(cfg.train.background, dtype=torch.float32, device=views.images.device)
    rgb, _alpha = render_gaussians(gaussians, views.intrinsics, views.c2w, res, res, background, cfg.model.rasterizer,
                                   stats=stats)
    return rgb.permute(0, 1, 4, 2, 3)  # [B, V, H, W, 3] -> [B, V, 3, H, W]


def predict_and_render(model: torch.nn.Module, batch: PosedViews, cfg: RunConfig,
                       stats: dict[str, int] | None = None) -> torch.Tensor:  # [B, V, 3, H, W]
    """The training step's forward pass."""
    return render_views(predict_gaussians(model, batch, cfg), batch, cfg, stats)
