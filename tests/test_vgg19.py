"""GS-LRM's VGG19 feature loss, loaded offline from a MatConvNet-format file (here a synthetic one with random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from zv_ray.config import load_config
from zv_ray.losses.perceptual import PerceptualWeightsMissing
from zv_ray.losses.training_loss import load_perceptual_loss, reconstruction_loss
from zv_ray.losses.vgg19 import IMAGE_WEIGHT, NUM_CONVS, STAGES, VGG19_URL, load_vgg19_loss

# VGG19's layer sequence as MatConvNet lists it, fully connected layers (stored as convolutions) included.
_FC = ((7, 7, 512, 4096), (1, 1, 4096, 8), (1, 1, 8, 8))  # fc6, fc7, fc8 shapes (fc7/fc8 shrunk: never read)


def write_matconvnet_vgg19(path, seed: int = 0, zero: bool = False):
    """[kh, kw, in, out] weights per conv, relu/pool layers between, as scipy.io.loadmat reads the real file."""
    rng = np.random.default_rng(seed)
    widths = [w for stage in ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4) for w in stage]
    shapes = [(3, 3, c_in, c_out) for c_in, c_out in zip([3, *widths], widths)] + list(_FC)
    layers, convs = [], []
    for i, shape in enumerate(shapes):
        w = np.zeros(shape, np.float32) if zero else rng.normal(0, 0.05, shape).astype(np.float32)
        b = np.zeros((shape[-1], 1), np.float32) if zero else rng.normal(0, 0.01, (shape[-1], 1)).astype(np.float32)
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0], cell[0, 1] = w, b
        layers += [{"name": f"conv{i}", "type": "conv", "weights": cell}, {"name": f"relu{i}", "type": "relu",
                                                                          "weights": np.empty((1, 0), dtype=object)}]
        if i in (1, 3, 7, 11, 15):
            layers.append({"name": f"pool{i}", "type": "pool", "weights": np.empty((1, 0), dtype=object)})
        convs.append((w, b))
    cells = np.empty((1, len(layers)), dtype=object)
    for i, layer in enumerate(layers):
        cells[0, i] = layer
    scipy.io.savemat(str(path), {"layers": cells})
    return convs


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg19") / "imagenet-vgg-verydeep-19.mat"
    return path, write_matconvnet_vgg19(path)


def test_loads_the_first_convolutions_of_the_file_in_torch_layout(vgg19_file):
    path, convs = vgg19_file
    net = load_vgg19_loss(str(path))
    assert len(net.convs) == NUM_CONVS == 14 and sum(map(len, STAGES)) == 14
    for conv, (w, b) in zip(net.convs, convs):  # [kh, kw, in, out] -> [out, in, kh, kw]
        np.testing.assert_array_equal(conv.weight.numpy(), np.transpose(w, (3, 2, 0, 1)))
        np.testing.assert_array_equal(conv.bias.numpy(), b[:, 0])
    assert not any(p.requires_grad for p in net.parameters()) and not net.train().training


def test_the_loss_is_zero_on_equal_images_positive_otherwise_and_trains(vgg19_file):
    net = load_vgg19_loss(str(vgg19_file[0]))
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g)
    pred = torch.rand(2, 3, 32, 32, generator=g).requires_grad_(True)
    assert float(net(target, target)) == 0.0
    loss = net(pred, target)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_with_blank_features_only_the_image_term_is_left(tmp_path):
    """Zero weights make every VGG activation 0: the loss is then the image term, mean |pred - target| (0-255
    scale, divided by 255), which pins the normalization."""
    path = tmp_path / "zero.mat"
    write_matconvnet_vgg19(path, zero=True)
    net = load_vgg19_loss(str(path))
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(net(pred, target), IMAGE_WEIGHT * (pred - target).abs().mean())


def test_missing_or_wrong_weights_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(PerceptualWeightsMissing, match=f"found none at .*nope.mat.*{VGG19_URL}"):
        load_vgg19_loss(str(tmp_path / "nope.mat"))
    scipy.io.savemat(str(tmp_path / "other.mat"), {"something": np.zeros(3)})
    with pytest.raises(PerceptualWeightsMissing, match="is not a MatConvNet VGG19 file"):
        load_vgg19_loss(str(tmp_path / "other.mat"))


def test_config_selects_the_vgg19_term_for_the_training_loss(vgg19_file):
    cfg = load_config(None, ["loss.perceptual=vgg19", f"loss.vgg19_weights={vgg19_file[0]}", "loss.perceptual_weight=0.2"])
    net = load_perceptual_loss(cfg.loss, "cpu")
    pred, target = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    total, parts = reconstruction_loss(pred, target, net, 0.2)
    torch.testing.assert_close(total, parts["mse"] + 0.2 * net(pred, target))


def test_doctor_checks_the_file_the_vgg19_term_reads(vgg19_file, tmp_path):
    from zv_ray.cluster.doctor import check_vgg

    settings = ["loss.perceptual=vgg19", "loss.perceptual_weight=0.2"]
    found = check_vgg(load_config(None, [*settings, f"loss.vgg19_weights={vgg19_file[0]}"]))
    assert found.ok and str(vgg19_file[0]) in found.detail
    missing = check_vgg(load_config(None, [*settings, f"loss.vgg19_weights={tmp_path / 'none.mat'}"]))
    assert not missing.ok and VGG19_URL in missing.fix
