"""On CUDA: gsplat and the pure-torch rasterizer agree (relative errors printed); the model runs in bf16."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device (gsplat kernels)", allow_module_level=True)
gsplat = pytest.importorskip("gsplat")

from zv_ray.config.model import ModelConfig  # noqa: E402
from zv_ray.model import GSLRM, TINY  # noqa: E402
from zv_ray.splat import Gaussians, render_gaussians, torch_rasterizer  # noqa: E402
from zv_ray.splat.rasterize import c2w_to_viewmat, intrinsics_to_K  # noqa: E402
from zv_ray.splat.synthetic import blob_views, ring  # noqa: E402

pytestmark = pytest.mark.gpu


def _scene(seed, b=2, n=3000):
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians(
        means=(torch.rand(b, n, 3, generator=gen) * 2 - 1) * 0.8,
        scales=0.01 + 0.08 * torch.rand(b, n, 3, generator=gen),
        quats=torch.nn.functional.normalize(torch.randn(b, n, 4, generator=gen), dim=-1),
        opacities=torch.rand(b, n, generator=gen),
        colors=torch.rand(b, n, 3, generator=gen),
    )
    return g.to("cuda")


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gsplat_and_torch_rasterizer_agree(seed):
    g = _scene(seed)
    intrinsics, c2w = ring(3, 64)
    intrinsics, c2w = intrinsics.expand(2, -1, -1).cuda(), c2w.expand(2, -1, -1, -1).cuda()
    viewmats, Ks = c2w_to_viewmat(c2w), intrinsics_to_K(intrinsics)
    bg = torch.ones(2, 3, 3, device="cuda")
    out = {}
    for name, fn in (("gsplat", gsplat.rasterization), ("torch", torch_rasterizer.rasterization)):
        params = [t.detach().clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]
        rgb, alpha, _ = fn(*params, viewmats, Ks, 64, 64, backgrounds=bg)
        weights = torch.linspace(0.5, 1.5, 3, device="cuda")
        ((rgb * weights).sum() + alpha.sum()).backward()
        out[name] = (rgb.detach(), alpha.detach(), [p.grad for p in params])
    (rgb_g, alpha_g, grads_g), (rgb_t, alpha_t, grads_t) = out["gsplat"], out["torch"]
    errors = {"rgb": _rel(rgb_t, rgb_g), "alpha": _rel(alpha_t, alpha_g)}
    errors.update({f"d_{k}": _rel(a, b) for k, a, b in zip(("means", "quats", "scales", "opacities", "colors"), grads_t, grads_g)})
    print(f"seed {seed}: relative errors torch vs gsplat " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert (rgb_t - rgb_g).abs().max() < 2e-3 and errors["rgb"] < 1e-4 and errors["alpha"] < 1e-4
    assert all(errors[k] < 2e-2 for k in errors if k.startswith("d_")), errors


def test_render_gaussians_uses_gsplat_on_cuda(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the torch rasterizer ran on CUDA")

    monkeypatch.setattr(torch_rasterizer, "rasterization", refuse)
    intrinsics, c2w = ring(2, 32)
    rgb, alpha = render_gaussians(_scene(3, b=1), intrinsics.cuda(), c2w.cuda(), 32, 32, (1.0, 1.0, 1.0))
    assert rgb.shape == (1, 2, 32, 32, 3) and alpha.shape == (1, 2, 32, 32, 1) and rgb.is_cuda


def test_tiny_model_bf16_step_on_cuda():
    images, intrinsics, c2w = (t.cuda() for t in blob_views(6, 32))
    model = GSLRM(ModelConfig(**TINY, bf16=True, grad_checkpoint=True)).cuda()
    g = model(images[:, :4], intrinsics[:, :4], c2w[:, :4])
    assert g.means.dtype == torch.float32 and g.colors.dtype == torch.float32
    rgb, _ = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0))
    ((rgb.permute(0, 1, 4, 2, 3) - images) ** 2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
