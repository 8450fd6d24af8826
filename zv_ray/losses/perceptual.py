"""LPIPS (VGG) without importing torchvision or lpips: torchvision does not import beside this CPU torch.

The network is the lpips package's (richzhang/PerceptualSimilarity lpips/lpips.py, version 0.1, net='vgg'):
inputs in [-1, 1] shifted and scaled by ScalingLayer, VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3, each unit-normalized over channels, squared differences weighted by the package's shipped 1x1
linear layers (lpips/weights/v0.1/vgg.pth), averaged over space and summed over layers.
The VGG16 backbone is rebuilt here with torchvision's layer names (features.0 ... features.28) and loaded
from torchvision's ImageNet file (vgg16-397923af.pth): the torch hub cache a machine with internet fills,
or an explicit path. Missing weights stop the run: an untrained LPIPS would silently train on noise.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from zv_ray.io import storage

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# torchvision vgg16 'D' config up to relu5_3; LPIPS taps the ReLU after the last conv of each stage.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class PerceptualWeightsMissing(RuntimeError):
    """The weights a perceptual network needs are not on this machine (nothing downloads at run time)."""


class LpipsWeightsMissing(PerceptualWeightsMissing):
    """The VGG16 ImageNet weights or the lpips package's linear weights are not on this machine."""


def hub_checkpoint(file_name: str) -> Path:
    """Where torch hub caches weight files: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def default_vgg_path() -> Path:
    """Where torchvision caches VGG16."""
    return hub_checkpoint(VGG16_FILE)


def lpips_linear_path() -> Path:
    """lpips/weights/v0.1/vgg.pth inside the installed lpips package, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise LpipsWeightsMissing(
            "the lpips package is not installed: pip install lpips (its shipped weights/v0.1/vgg.pth is needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"
    if not path.is_file():
        raise LpipsWeightsMissing(f"the lpips package has no linear weights at {path}; reinstall lpips")
    return path


class Vgg16Features(nn.Module):
    """torchvision.models.vgg16().features[:30] with the same module indices, so its state-dict keys match
    (features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.weight/bias); forward returns the five LPIPS taps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        c_in = 3
        for stage, widths in enumerate(_VGG16_STAGES):
            if stage:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for c_out in widths:
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
                c_in = c_out
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:  # [B, 3, H, W] -> 5 x [B, C_l, H_l, W_l]
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS v0.1 with the VGG16 trunk; frozen, in eval mode. forward(pred, target) in [0, 1] -> [B]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.vgg = Vgg16Features()
        # lpips NetLinLayer: Sequential(Dropout, Conv2d 1x1 no bias), hence the key lin{l}.model.1.weight.
        self.lins = nn.ModuleList(
            nn.Sequential(nn.Dropout(), nn.Conv2d(widths[-1], 1, kernel_size=1, bias=False)) for widths in _VGG16_STAGES
        )

    def forward(
        self,
        pred: Tensor,  # [B, 3, H, W] in [0, 1]
        target: Tensor,  # [B, 3, H, W] in [0, 1]
    ) -> Tensor:  # [B]
        feats = [self.vgg(((x * 2 - 1) - self.shift) / self.scale) for x in (pred, target)]
        total = 0.0
        for lin, f0, f1 in zip(self.lins, *feats):
            f0 = f0 / (f0.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # lpips.normalize_tensor
            f1 = f1 / (f1.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always frozen: dropout off, never fine-tuned


def resolve_vgg_weights(vgg_weights: str | None = None) -> str:
    """The VGG16 weights file load_lpips would read (`vgg_weights`: a local path or an s3:// / gs:// object that
    every node reads, else the torch hub cache); raises LpipsWeightsMissing saying where to put it. Cheap: for
    failing before a cluster job starts, on the driver and on a trainer node (`zv-ray doctor`)."""
    path = storage.absolute(vgg_weights or default_vgg_path())
    if not storage.is_file(path):
        raise LpipsWeightsMissing(
            f"LPIPS needs torchvision's VGG16 ImageNet weights and found none at {path}. Download {VGG16_URL} "
            f"to {default_vgg_path()} (that is $TORCH_HOME/hub/checkpoints/{VGG16_FILE}; a machine with internet "
            f"fills it on torchvision.models.vgg16(weights='IMAGENET1K_V1')), or set loss.vgg_weights to the file's "
            f"path or to an s3:// / gs:// copy every node can read; or set loss.perceptual_weight=0 to train without "
            f"the perceptual term."
        )
    lpips_linear_path()
    return path


def load_lpips(vgg_weights: str | None = None, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS(VGG) with the lpips package's shipped linear weights and torchvision's VGG16 ImageNet weights
    from `vgg_weights` (a torchvision-format state dict) or the torch hub cache. Raises LpipsWeightsMissing."""
    path = resolve_vgg_weights(vgg_weights)
    net = LPIPS()
    with storage.local_copy(path) as local:
        vgg_state = torch.load(local, map_location="cpu", weights_only=True)
    features = {k: v for k, v in vgg_state.items() if k.startswith("features.")}
    expected = net.vgg.state_dict()
    wrong = {k: tuple(v.shape) for k, v in features.items() if k in expected and v.shape != expected[k].shape}
    missing = sorted(set(expected) - set(features))
    if missing or wrong:
        raise LpipsWeightsMissing(
            f"{path} is not a torchvision VGG16 state dict: missing {missing}, wrong shapes {wrong} "
            f"(expected {VGG16_FILE} from {VGG16_URL})"
        )
    net.vgg.load_state_dict({k: features[k] for k in expected})
    lin_state = torch.load(lpips_linear_path(), map_location="cpu", weights_only=True)
    net.lins.load_state_dict({k.replace("lin", "", 1).replace(".model", "", 1): v for k, v in lin_state.items()})
    net.requires_grad_(False)
    return net.eval().to(device)
