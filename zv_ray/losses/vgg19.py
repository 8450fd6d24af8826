"""GS-LRM's perceptual term: a VGG19 feature loss in the style of Chen & Koltun (cascaded refinement networks), not
LPIPS.

The image and the VGG19 activations at relu1_2, relu2_2, relu3_2, relu4_2 and relu5_2 (average pooling between
stages, as in the reference) are compared by mean absolute error, weighted 1, 1/2.6, 1/4.8, 1/3.7, 1/5.6 and 10/1.5,
on images scaled to [0, 255] minus the ImageNet mean, and the sum is divided by 255. The weights are MatConvNet's
ImageNet VGG19 (imagenet-vgg-verydeep-19.mat), the file the reference implementations load; it is read with scipy,
from the torch hub cache or an explicit path. Missing weights stop the run, like LPIPS's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zv_ray.io import storage
from zv_ray.losses.perceptual import PerceptualWeightsMissing, hub_checkpoint

VGG19_FILE = "imagenet-vgg-verydeep-19.mat"
VGG19_URL = f"https://www.vlfeat.org/matconvnet/models/{VGG19_FILE}"
# Output channels of the VGG19 convolutions the loss reads, by stage: conv1_1 .. conv5_2 (conv5_3, conv5_4 and the
# fully connected layers come after the last tap).
STAGES = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512))
NUM_CONVS = sum(map(len, STAGES))
# Weight of the image term, then of the ReLU after the second convolution of each stage (relu1_2 .. relu5_2).
IMAGE_WEIGHT = 1.0
TAP_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
IMAGENET_MEAN_255 = (123.680, 116.779, 103.939)  # RGB: MatConvNet's input normalization


class Vgg19FeatureLoss(nn.Module):
    """forward(pred, target) in [0, 1], [B, 3, H, W] -> scalar; frozen, in eval mode."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1))
        widths = [w for stage in STAGES for w in stage]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip([3, *widths], widths))

    def features(self, x: Tensor) -> list[Tensor]:  # relu1_2 .. relu5_2
        taps, convs = [], iter(self.convs)
        for stage, widths in enumerate(STAGES):
            if stage:
                x = F.avg_pool2d(x, 2)
            for j in range(len(widths)):
                x = F.relu(next(convs)(x))
                if j == 1:
                    taps.append(x)
        return taps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred * 255.0 - self.mean, target * 255.0 - self.mean
        total = IMAGE_WEIGHT * (pred - target).abs().mean()
        for w, fp, ft in zip(TAP_WEIGHTS, self.features(pred), self.features(target)):
            total = total + w * (fp - ft).abs().mean()
        return total / 255.0

    def train(self, mode: bool = True) -> "Vgg19FeatureLoss":
        return super().train(False)


def resolve_vgg19_weights(path: str | None = None) -> str:
    """The .mat file load_vgg19_loss would read; raises PerceptualWeightsMissing saying where to put it."""
    resolved = storage.absolute(path or hub_checkpoint(VGG19_FILE))
    if not storage.is_file(resolved):
        raise PerceptualWeightsMissing(
            f"the VGG19 feature loss needs MatConvNet's ImageNet VGG19 weights and found none at {resolved}. Download "
            f"{VGG19_URL} to {hub_checkpoint(VGG19_FILE)} (that is $TORCH_HOME/hub/checkpoints/{VGG19_FILE}), or set "
            f"loss.vgg19_weights to the file's path or an s3:// / gs:// copy every node can read; or use "
            f"loss.perceptual=lpips, or loss.perceptual_weight=0 to train without the perceptual term."
        )
    return resolved


def conv_weights_from_mat(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first NUM_CONVS convolutions of a MatConvNet network file as (weight [out, in, kh, kw], bias [out]),
    read by field name (MatConvNet stores weights as [kh, kw, in, out])."""
    import scipy.io

    layers = scipy.io.loadmat(str(path))["layers"][0]
    convs = []
    for layer in layers:
        layer = layer[0, 0]
        if str(np.squeeze(layer["type"])) == "conv" and len(convs) < NUM_CONVS:
            weight, bias = layer["weights"][0, 0], layer["weights"][0, 1]
            convs.append((np.transpose(weight, (3, 2, 0, 1)), np.reshape(bias, -1)))
    return convs


def load_vgg19_loss(path: str | None = None, device: str | torch.device = "cpu") -> Vgg19FeatureLoss:
    resolved = resolve_vgg19_weights(path)
    net = Vgg19FeatureLoss()
    with storage.local_copy(resolved) as local:
        try:
            convs = conv_weights_from_mat(local)
        except (KeyError, ValueError, IndexError) as err:
            raise PerceptualWeightsMissing(f"{resolved} is not a MatConvNet VGG19 file ({err}); expected {VGG19_URL}") from None
    shapes = [tuple(c.weight.shape) for c in net.convs]
    if [w.shape for w, _ in convs] != shapes:
        raise PerceptualWeightsMissing(f"{resolved} is not a MatConvNet VGG19 file: its first convolutions are "
                                       f"{[w.shape for w, _ in convs]}, expected {shapes} ({VGG19_URL})")
    with torch.no_grad():
        for conv, (w, b) in zip(net.convs, convs):
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            conv.bias.copy_(torch.from_numpy(b))
    net.requires_grad_(False)
    return net.eval().to(device)
