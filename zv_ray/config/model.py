"""GS-LRM model and loss settings (GS-LRM arXiv 2404.19702; LRM-Zero arXiv 2406.09371)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel


class ModelConfig(StrictModel):
    # Patch side in pixels (GS-LRM: 8).
    patch_size: int = Field(8, ge=1, le=64)
    # Transformer width, depth, heads (paper: 1024, 24, 16).
    width: int = Field(1024, ge=8)
    depth: int = Field(24, ge=1)
    num_heads: int = Field(16, ge=1)
    # MLP hidden width as a multiple of the transformer width (GS-LRM: 4).
    mlp_ratio: float = Field(4.0, gt=0)
    # Depth along each unit pixel ray. "relative": t = -o.d + depth_half_range * (2 sigmoid(x) - 1), a window
    # centred on the ray's closest approach to the origin, kept at or above `min_depth` (FaceLift's shipped object
    # config; it follows every camera distance, Zeroverse's r ~ U(1.5, 2.8) included). "fixed":
    # t = near + (far - near) * sigmoid(x) (FaceLift's default 1.2 .. 4.2, which fits cameras at r = 2.7 only).
    depth_mode: Literal["relative", "fixed"] = "relative"
    # Half-width of the relative window (FaceLift: 1.8, enough for an object inside [-1, 1]^3) and the small
    # near plane it is kept above (a camera 1.5 from the origin sees the box from 0.5 on).
    depth_half_range: float = Field(1.8, gt=0)
    min_depth: float = Field(0.1, gt=0)
    # The fixed window (FaceLift's default: 1.2 .. 4.2); unused by the relative one.
    near: float = Field(1.2, gt=0)
    far: float = Field(4.2, gt=0)
    # Scale activation exp(min(s + scale_bias, scale_max_log)); opacity sigmoid(o + opacity_bias).
    scale_bias: float = -2.3
    scale_max_log: float = -1.2
    opacity_bias: float = -2.0
    # Clamp Gaussian centres to [-clamp, clamp]^3 (0 disables).
    position_clamp: float = Field(1.0, ge=0)
    # bf16 autocast on CUDA; gradient checkpointing per transformer block.
    bf16: bool = True
    grad_checkpoint: bool = False
    # Gaussian rasterizer: auto = gsplat on CUDA (required there), the torch one on CPU; "torch" also allows the
    # slow torch rasterizer on CUDA; "gsplat" requires gsplat.
    rasterizer: Literal["auto", "gsplat", "torch"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.far <= self.near:
            raise ValueError(f"far ({self.far}) must exceed near ({self.near})")
        return self


class LossConfig(StrictModel):
    # Loss = MSE + perceptual_weight * the perceptual term, 0 disables it. GS-LRM's weight 0.5 (LRM-Zero: 0.2 on
    # Zeroverse) multiplies its VGG19 feature loss ("vgg19"); with "lpips" the scale differs, so the paper's
    # weights are a starting point there, not a reproduction.
    perceptual_weight: float = Field(0.2, ge=0)
    # The perceptual term: "lpips" (LPIPS v0.1 on VGG16, needs vgg_weights) or "vgg19" (GS-LRM's: weighted L1
    # between VGG19 activations at 5 layers, Chen & Koltun style, needs vgg19_weights).
    perceptual: Literal["lpips", "vgg19"] = "lpips"
    # Perceptual term is off before this step (GS-LRM: 5000 at 256 px).
    perceptual_start_step: int = Field(0, ge=0)
    # torchvision-format VGG16 weights (vgg16-397923af.pth); None searches $TORCH_HOME/hub/checkpoints.
    vgg_weights: str | None = None
    # MatConvNet's ImageNet VGG19 (imagenet-vgg-verydeep-19.mat) for perceptual "vgg19"; None searches
    # $TORCH_HOME/hub/checkpoints.
    vgg19_weights: str | None = None
