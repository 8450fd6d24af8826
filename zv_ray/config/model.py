"""GS-LRM model and loss settings (GS-LRM arXiv 2404.19702; LRM-Zero arXiv 2406.09371)."""

from __future__ import annotations

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel


class ModelConfig(StrictModel):
    # Patch side in pixels (GS-LRM: 8).
    patch_size: int = Field(8, ge=1, le=64)
    # Transformer width, depth, heads (paper: 1024, 24, 16).
    width: int = Field(1024, ge=8)
    depth: int = Field(24, ge=1)
    num_heads: int = Field(16, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    # Depth along each pixel ray: t = near + (far - near) * sigmoid(x) (GS-LRM objects: 1.2 .. 4.2).
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

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.far <= self.near:
            raise ValueError(f"far ({self.far}) must exceed near ({self.near})")
        return self


class LossConfig(StrictModel):
    # Loss = MSE + perceptual_weight * LPIPS(VGG). LRM-Zero: 0.2 (0.5 diverged on Zeroverse). 0 disables LPIPS.
    perceptual_weight: float = Field(0.2, ge=0)
    # Perceptual term is off before this step (GS-LRM: 5000 at 256 px).
    perceptual_start_step: int = Field(0, ge=0)
    # torchvision-format VGG16 weights (vgg16-397923af.pth); None searches $TORCH_HOME/hub/checkpoints.
    vgg_weights: str | None = None
