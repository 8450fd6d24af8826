"""GS-LRM: shapes, activations, pixel alignment, gradients, checkpointing, FLOPs, and a CPU overfit."""

import time

import pytest
import torch

from zv_ray.config.model import ModelConfig
from zv_ray.losses.metrics import psnr
from zv_ray.model import GSLRM, TINY, flops_per_step, num_params
from zv_ray.render.rays import ray_directions
from zv_ray.splat import render_gaussians
from zv_ray.splat.synthetic import blob_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def views():
    return blob_views(6, 32)  # images [1, 6, 3, 32, 32], intrinsics, c2w


def _model(**overrides):
    torch.manual_seed(0)
    return GSLRM(ModelConfig(**{**TINY, "bf16": False, **overrides}))


def test_one_gaussian_per_input_pixel_in_range(views):
    images, intrinsics, c2w = views
    images, intrinsics, c2w = images.repeat(2, 1, 1, 1, 1), intrinsics.repeat(2, 1, 1), c2w.repeat(2, 1, 1, 1)
    model = _model()
    g = model(images[:, :4], intrinsics[:, :4], c2w[:, :4])
    n = 4 * 32 * 32
    assert g.means.shape == (2, n, 3) and g.quats.shape == (2, n, 4) and g.opacities.shape == (2, n)
    cfg = model.cfg
    assert g.means.abs().max() <= cfg.position_clamp
    assert (g.scales > 0).all() and g.scales.max() <= torch.exp(torch.tensor(cfg.scale_max_log)) + 1e-6
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(2, n))
    assert (g.opacities > 0).all() and (g.opacities < 1).all()
    assert (g.colors >= 0).all() and (g.colors <= 1).all()


@pytest.mark.parametrize("outer_autocast", [False, True])
def test_centres_lie_on_their_pixel_rays_between_near_and_far(views, outer_autocast):
    """Also under a caller's bf16 autocast (the trainer wraps the model in one): rays stay fp32."""
    images, intrinsics, c2w = views
    model = _model(position_clamp=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer_autocast):
        g = model(images[:, :4], intrinsics[:, :4], c2w[:, :4])
    assert g.means.dtype == torch.float32
    origins, dirs = ray_directions(intrinsics[:, :4], c2w[:, :4], 32, 32)
    offset = g.means - origins.reshape(1, -1, 3)
    t = (offset * dirs.reshape(1, -1, 3)).sum(-1)
    torch.testing.assert_close(offset, t[..., None] * dirs.reshape(1, -1, 3), atol=1e-5, rtol=0)
    assert t.min() >= model.cfg.near - 1e-5 and t.max() <= model.cfg.far + 1e-5


def test_step_zero_render_is_soft_and_grey_not_degenerate(views):
    images, intrinsics, c2w = views
    g = _model()(images[:, :4], intrinsics[:, :4], c2w[:, :4])
    assert 0.08 < g.scales.median() < 0.13 and 0.08 < g.opacities.median() < 0.16
    rgb, alpha = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0))
    assert torch.isfinite(rgb).all() and 0.3 < alpha.mean() < 1.0 and rgb.std() > 0.01


def test_render_loss_reaches_every_parameter(views):
    images, intrinsics, c2w = views
    model = _model()
    g = model(images[:, :4], intrinsics[:, :4], c2w[:, :4])
    rgb, _ = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0))
    ((rgb.permute(0, 1, 4, 2, 3) - images) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_changes_nothing_but_memory(views):
    images, intrinsics, c2w = views
    outs = []
    for flag in (False, True):
        model = _model(grad_checkpoint=flag)
        g = model(images[:, :4], intrinsics[:, :4], c2w[:, :4])
        (g.means.sum() + g.colors.pow(2).sum()).backward()
        outs.append((g.means.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b)


def test_architecture_matches_gs_lrm():
    model = _model()
    p, d = 8, TINY["width"]
    assert model.embed.weight.shape == (d, 9 * p * p) and model.embed.bias is None
    assert model.head.weight.shape == (p * p * 12, d) and model.head.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm)))
    assert len(model.blocks) == TINY["depth"]
    assert abs(model.blocks[0].mlp[0].weight.std().item() - 0.02) < 0.002


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="multiple of model.patch_size=8"):
        _model()(torch.rand(1, 2, 3, 20, 24), torch.ones(1, 2, 4), torch.eye(4).expand(1, 2, 4, 4))


def test_flops_count_matches_a_hand_count():
    cfg = ModelConfig(patch_size=8, width=64, depth=2, num_heads=2)
    tokens = 2 * 4 * 4  # 2 views of 32 px
    per_token = 2 * 576 * 64 + 2 * 64 * 768 + 2 * (2 * (4 * 64 * 64 + 2 * 64 * 256) + 4 * tokens * 64)
    assert flops_per_step(cfg, batch=3, views=2, resolution=32) == 3 * 3 * tokens * per_token
    paper = flops_per_step(ModelConfig(), batch=8, views=4, resolution=256)
    assert 9e13 < paper < 1.1e14  # ~99 TFLOP per step at batch 8 (GS-LRM stage 1)
    assert 0.9e6 < num_params(_model()) < 1.0e6


@pytest.mark.slow
def test_tiny_model_overfits_one_scene_on_cpu():
    """The demo claim: 4 views of one scene at 32 px, tiny model, >= 27 dB on the input views in 150 steps."""
    images, intrinsics, c2w = blob_views(4, 32, seed=5)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    start, history = time.process_time(), []
    for step in range(150):
        g = model(images, intrinsics, c2w)
        rgb, _ = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0))
        pred = rgb.permute(0, 1, 4, 2, 3)
        loss = ((pred - images) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(psnr(pred[0].detach(), images[0]).mean().item())
    print(f"PSNR step 0 {history[0]:.1f} dB, 50 {history[50]:.1f}, 100 {history[100]:.1f}, 149 {history[-1]:.1f}; "
          f"{(time.process_time() - start) / 150:.3f} s CPU per step")
    assert history[0] < 12 and history[-1] >= 27.0
