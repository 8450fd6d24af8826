"""Training loss (MSE + LPIPS standing in for GS-LRM's VGG19 feature loss) and evaluation metrics (PSNR, SSIM, LPIPS)."""

from zv_ray.losses.metrics import lpips, psnr, ssim
from zv_ray.losses.perceptual import LPIPS, LpipsWeightsMissing, load_lpips
from zv_ray.losses.reconstruction import reconstruction_loss

__all__ = ["LPIPS", "LpipsWeightsMissing", "load_lpips", "lpips", "psnr", "reconstruction_loss", "ssim"]
