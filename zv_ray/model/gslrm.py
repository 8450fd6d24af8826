"""GS-LRM: posed views -> one 3D Gaussian per input pixel, with one plain transformer.

GS-LRM (Zhang et al., arXiv 2404.19702), as in the public FaceLift code (weijielyu/FaceLift gslrm/):
- each view's RGB in [-1, 1] concatenated with its Plücker rays (o x d, d): 9 channels; 8x8 patches,
  Linear(9 * 64 -> d, no bias);
- LayerNorm on the tokens, then pre-LN blocks (no biases, GELU MLP x4) whose self-attention spans every
  view's tokens at once (F.scaled_dot_product_attention: flash attention on GPU);
- head LayerNorm + Linear(d -> 64 * 12, no bias), unpatchified to per-pixel Gaussian parameters;
- activations: depth along the pixel's unit ray t = -o.d + 1.8 (2 sigmoid(x) - 1), a window centred on the
  ray's closest approach to the origin, kept above a small near plane (FaceLift's object config; the fixed
  window t = near + (far - near) sigmoid(x), FaceLift's default 1.2 .. 4.2, is `depth_mode: fixed`), centre
  o + t d clamped to the object box, scale exp(min(s - 2.3, -1.2)), opacity sigmoid(o - 2.0), normalized wxyz
  quaternion, colour from one SH degree-0 coefficient (0.5 + C0 f, clamped at 0 only);
- every Linear N(0, 0.02) (nanoGPT init). At step 0 the Gaussians sit mid-window (near the origin's depth),
  scale ~0.1, opacity ~0.12, grey: a soft, non-degenerate render.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from zv_ray.config.model import ModelConfig
from zv_ray.render.rays import plucker_rays, ray_directions
from zv_ray.splat.gaussians import Gaussians

SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic
GAUSSIAN_CHANNELS = 12  # depth 1, SH0 colour 3, scale 3, quaternion 4, opacity 1
# A CPU-sized model for tests and dry runs: at 32 px, 4 input + 4 target views, a batch-1 step is ~0.2 s on one
# core. configs/tiny.yaml (the demo) uses it with patch 4, a third slower per step and better per CPU-minute.
TINY = {"patch_size": 8, "width": 128, "depth": 4, "num_heads": 4}


class SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # [B, L, d]
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, d_head]
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.attn = SelfAttention(width, num_heads)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.mlp = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, width, bias=False))

    def forward(self, x: Tensor) -> Tensor:  # [B, L, d]
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GSLRM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.width
        self.embed = nn.Linear(9 * p * p, d, bias=False)
        self.ln_in = nn.LayerNorm(d, bias=False)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_out = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, p * p * GAUSSIAN_CHANNELS, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(
        self,
        images: Tensor,  # [B, V, 3, H, W] in [0, 1]
        intrinsics: Tensor,  # [B, V, 4] fx, fy, cx, cy in pixels
        c2w: Tensor,  # [B, V, 4, 4] OpenCV camera-to-world
    ) -> Gaussians:  # N = V * H * W, ordered (view, row, column)
        b, v, _, h, w = images.shape
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} must be a multiple of model.patch_size={p}")
        # Rays in fp32 even under a caller's autocast: bf16 directions would misplace Gaussians by ~1 px. The
        # poses get no gradient; the images keep theirs (the model is a differentiable function of its views).
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            rays = plucker_rays(intrinsics, c2w, h, w).to(images.dtype)  # [B, V, 6, H, W]
            origins, dirs = ray_directions(intrinsics, c2w, h, w)  # [B, V, H, W, 3]
        x = torch.cat([images * 2 - 1, rays], dim=2)
        # Patchify: [B, V, 9, H, W] -> [B, V * h/p * w/p, p * p * 9] with (row, column, channel) inside a patch.
        x = x.reshape(b, v, 9, h // p, p, w // p, p).permute(0, 1, 3, 5, 4, 6, 2).reshape(b, -1, p * p * 9)

        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16(images)):
            x = self.ln_in(self.embed(x))
            for block in self.blocks:
                if self.cfg.grad_checkpoint and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        # Head in its parameters' dtype, outside autocast: fp32 for a bf16-trunk run (bf16 depth quantizes to
        # 0.2-0.5 px of reprojection jitter at 256-512 px), and float64 for a float64 model (gradient checks).
        with torch.autocast(device_type=images.device.type, enabled=False):
            raw = self.head(self.ln_out(x.to(self.head.weight.dtype)))  # [B, tokens, p * p * 12]

        # Unpatchify to one parameter vector per input pixel, in (view, row, column) order.
        raw = raw.reshape(b, v, h // p, w // p, p, p, GAUSSIAN_CHANNELS).permute(0, 1, 2, 4, 3, 5, 6)
        raw = raw.reshape(b, v * h * w, GAUSSIAN_CHANNELS)
        return self.activate(raw, origins.reshape(b, -1, 3), dirs.reshape(b, -1, 3))

    def uses_bf16(self, images: Tensor) -> bool:
        """The transformer trunk in bf16: on CUDA, when model.bf16."""
        return self.cfg.bf16 and images.is_cuda

    def activate(
        self,
        raw: Tensor,  # [B, N, 12]
        origins: Tensor,  # [B, N, 3] ray origins
        dirs: Tensor,  # [B, N, 3] unit ray directions
    ) -> Gaussians:
        cfg = self.cfg
        depth, sh0, scale, quat, opacity = raw.split([1, 3, 3, 4, 1], dim=-1)
        if cfg.depth_mode == "relative":
            # Centred on the ray's closest approach to the origin, so every camera distance sees the whole box.
            closest = -(origins * dirs).sum(-1, keepdim=True)  # [B, N, 1]
            t = (closest + cfg.depth_half_range * (2 * torch.sigmoid(depth) - 1)).clamp(min=cfg.min_depth)
        else:
            t = cfg.near + (cfg.far - cfg.near) * torch.sigmoid(depth)
        means = origins + t * dirs
        if cfg.position_clamp > 0:
            means = means.clamp(-cfg.position_clamp, cfg.position_clamp)
        return Gaussians(
            means=means,
            scales=torch.exp((scale + cfg.scale_bias).clamp(max=cfg.scale_max_log)),
            quats=F.normalize(quat, dim=-1),
            opacities=torch.sigmoid(opacity[..., 0] + cfg.opacity_bias),
            # Clamped at 0 only: a [0, 1] clamp has no gradient at 1, the white background every Gaussian starts
            # near; the rendered image is clamped where it is scored.
            colors=(0.5 + SH_C0 * sh0).clamp(min=0),
        )


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_step(cfg: ModelConfig, batch: int, views: int, resolution: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward; rasterization and
    checkpoint recomputation not counted), for MFU."""
    p, d = cfg.patch_size, cfg.width
    tokens = views * (resolution // p) ** 2
    hidden = int(d * cfg.mlp_ratio)
    per_token = 2 * (9 * p * p * d + d * p * p * GAUSSIAN_CHANNELS)  # embed + head
    per_token += cfg.depth * (2 * (4 * d * d + 2 * d * hidden) + 4 * tokens * d)  # projections, MLP, QK^T and AV
    return 3.0 * batch * tokens * per_token
