"""Training loss (MSE + a perceptual term: LPIPS, or GS-LRM's VGG19 feature loss) and evaluation metrics (PSNR, SSIM, LPIPS)."""

from zv_ray.losses.metrics import lpips, psnr, ssim
from zv_ray.losses.perceptual import LPIPS, LpipsWeightsMissing, PerceptualWeightsMissing, load_lpips
from zv_ray.losses.training_loss import load_perceptual_loss, reconstruction_loss

__all__ = ["LPIPS", "LpipsWeightsMissing", "PerceptualWeightsMissing", "load_lpips", "load_perceptual_loss", "lpips",
           "psnr", "reconstruction_loss", "ssim"]
