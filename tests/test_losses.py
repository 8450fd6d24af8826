"""LPIPS built without torchvision: fabricated VGG16 weights, exact layer names, refusal without weights."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from zv_ray.losses import LpipsWeightsMissing, load_lpips, reconstruction_loss
from zv_ray.losses.perceptual import VGG16_FILE, Vgg16Features, default_vgg_path, lpips_linear_path, resolve_vgg_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# torchvision.models.vgg16().features: 13 convs at these indices, with these (out, in) channels.
VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
               17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random state dict in torchvision's vgg16 format (features only; the classifier is never read)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i, (c_out, c_in) in VGG16_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen) * (2 / (9 * c_in)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(c_out, generator=gen) * 0.01
    path = tmp_path_factory.mktemp("hub") / VGG16_FILE
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def net(vgg_file):
    return load_lpips(str(vgg_file))


def test_backbone_has_torchvision_vgg16_layer_names_and_shapes():
    state = Vgg16Features().state_dict()
    expected = {}
    for i, (c_out, c_in) in VGG16_CONVS.items():
        expected[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
        expected[f"features.{i}.bias"] = (c_out,)
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_lpips_is_zero_for_identical_images_positive_otherwise_and_differentiable(net):
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 16, 16, generator=gen)
    pred = (target + 0.2 * torch.randn(2, 3, 16, 16, generator=gen)).clamp(0, 1).requires_grad_()
    same = net(target, target)
    assert same.shape == (2,) and torch.equal(same, torch.zeros(2))
    value = net(pred, target)
    assert value.shape == (2,) and (value > 0).all()
    value.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    net.train()
    assert not net.training  # frozen: dropout never switches on


def test_lpips_uses_the_packages_shipped_linear_weights(net):
    shipped = torch.load(lpips_linear_path(), map_location="cpu", weights_only=True)
    for layer in range(5):
        torch.testing.assert_close(net.lins[layer][1].weight, shipped[f"lin{layer}.model.1.weight"])


def test_matches_the_lpips_package(vgg_file, tmp_path):
    """The real lpips.LPIPS(net='vgg') on the same fabricated trunk gives the same distances. It runs in a
    subprocess with a stand-in `torchvision.models.vgg16` (the real torchvision does not import here)."""
    script = textwrap.dedent(f"""
        import sys, types, torch
        from zv_ray.losses.perceptual import Vgg16Features, load_lpips

        def vgg16(pretrained=True, **kw):
            trunk = Vgg16Features()
            trunk.load_state_dict(torch.load({str(vgg_file)!r}, weights_only=True))
            return trunk

        models = types.ModuleType("torchvision.models")
        models.vgg16 = vgg16
        tv = types.ModuleType("torchvision")
        tv.models = models
        sys.modules.update({{"torchvision": tv, "torchvision.models": models}})
        import lpips
        ref = lpips.LPIPS(net="vgg", verbose=False)
        ours = load_lpips({str(vgg_file)!r})
        gen = torch.Generator().manual_seed(2)
        a, b = torch.rand(2, 3, 24, 28, generator=gen), torch.rand(2, 3, 24, 28, generator=gen)
        expected = ref(a, b, normalize=True).flatten()
        got = ours(a, b)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), (got, expected)
        print("max abs diff", (got - expected).abs().max().item())
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]


def test_missing_weights_stop_with_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LpipsWeightsMissing):
        resolve_vgg_weights()  # the cheap pre-flight check the trainer runs before starting Ray
    with pytest.raises(LpipsWeightsMissing) as err:
        load_lpips()
    message = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / VGG16_FILE) in message
    assert "loss.vgg_weights" in message and "download.pytorch.org" in message
    assert default_vgg_path() == tmp_path / "torch" / "hub" / "checkpoints" / VGG16_FILE
    with pytest.raises(LpipsWeightsMissing, match="nowhere.pth"):
        load_lpips(str(tmp_path / "nowhere.pth"))


def test_weights_in_the_torch_hub_cache_are_found(vgg_file, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(vgg_file.parent.parent))
    (vgg_file.parent.parent / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    cached = vgg_file.parent.parent / "hub" / "checkpoints" / VGG16_FILE
    cached.write_bytes(vgg_file.read_bytes())
    assert resolve_vgg_weights() == str(cached)
    assert load_lpips()(torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)) > 0


def test_a_file_that_is_not_vgg16_is_refused(tmp_path):
    path = tmp_path / "not_vgg.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(LpipsWeightsMissing, match="not a torchvision VGG16 state dict"):
        load_lpips(str(path))


def test_reconstruction_loss_is_mse_plus_weighted_lpips(net):
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(1, 2, 3, 16, 16, generator=gen)
    pred = torch.rand(1, 2, 3, 16, 16, generator=gen, requires_grad=True)
    total, parts = reconstruction_loss(pred, target, net, 0.2)
    mse = ((pred - target) ** 2).mean()
    torch.testing.assert_close(parts["mse"], mse.detach())
    torch.testing.assert_close(parts["perceptual"], net(pred[0], target[0]).mean().detach())
    torch.testing.assert_close(total, mse + 0.2 * parts["perceptual"])
    total.backward()
    assert pred.grad.abs().sum() > 0
    only_mse, parts = reconstruction_loss(pred, target, None, 0.2)
    torch.testing.assert_close(only_mse, mse)
    assert parts["perceptual"] == 0


def test_vgg_weights_on_s3_are_checked_and_loaded_on_any_node(vgg_file, s3_env):
    from zv_ray.io import storage

    remote = "s3://zv-test/weights/" + VGG16_FILE
    with pytest.raises(LpipsWeightsMissing, match="s3://zv-test/weights"):
        resolve_vgg_weights(remote)
    storage.upload_file(vgg_file, remote)
    assert resolve_vgg_weights(remote) == remote
    local = load_lpips(str(vgg_file))(torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16))
    assert torch.allclose(load_lpips(remote)(torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)), local)
