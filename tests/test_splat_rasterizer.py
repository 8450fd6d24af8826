"""Pure-torch rasterizer: analytic single splats, gradients, tiles == dense, gsplat's projection."""

import math

import pytest
import torch

from zv_ray.splat import Gaussians, render_gaussians
from zv_ray.splat import torch_rasterizer as tr
from zv_ray.splat.rasterize import c2w_to_viewmat, intrinsics_to_K

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _camera(width, height, f=20.0, dtype=torch.float64):
    """One camera at the origin looking down +z (identity pose): viewmats [1, 1, 4, 4], Ks [1, 1, 3, 3]."""
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None, None], K[None, None]


def _quat_z(theta):  # rotation by theta about the camera's optical axis, wxyz
    return torch.tensor([math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)], dtype=torch.float64)


def _render(means, quats, scales, opac, colors, viewmats, Ks, w, h, bg=None, **kw):
    return tr.rasterization(means[None], quats[None], scales[None], opac[None], colors[None], viewmats, Ks, w, h, backgrounds=bg, **kw)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.3, -0.2)])
def test_single_isotropic_gaussian_matches_analytic_2d_gaussian(offset):
    w, h, f, z, s, o = 40, 30, 20.0, 2.0, 0.15, 0.8
    x, y = offset
    viewmats, Ks = _camera(w, h, f)
    color = torch.tensor([[0.2, 0.6, 0.9]], dtype=torch.float64)
    bg = torch.tensor([[[1.0, 0.5, 0.0]]], dtype=torch.float64)
    rgb, alpha, _ = _render(
        torch.tensor([[x, y, z]], dtype=torch.float64), _quat_z(0.0)[None], torch.full((1, 3), s, dtype=torch.float64),
        torch.tensor([o], dtype=torch.float64), color, viewmats, Ks, w, h, bg[0],
    )
    # EWA: cov2d = s^2 J J^T + 0.3 I with J the projection's Jacobian at (x, y, z).
    jac = torch.tensor([[f / z, 0, -f * x / z**2], [0, f / z, -f * y / z**2]], dtype=torch.float64)
    cov = s**2 * jac @ jac.T + 0.3 * torch.eye(2, dtype=torch.float64)
    centre = torch.tensor([f * x / z + w / 2, f * y / z + h / 2], dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    d = torch.stack([xs, ys], dim=-1).double() - centre
    q = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d)
    a = o * torch.exp(-q)
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    expected = a[..., None] * color + (1 - a[..., None]) * bg[0, 0]
    torch.testing.assert_close(alpha[0, 0, ..., 0], a, atol=1e-10, rtol=0)
    torch.testing.assert_close(rgb[0, 0], expected, atol=1e-10, rtol=0)


def test_rotated_anisotropic_gaussian_matches_analytic():
    w, h, f, z, theta = 36, 36, 30.0, 3.0, 0.6
    sx, sy = 0.3, 0.08
    viewmats, Ks = _camera(w, h, f)
    _, alpha, _ = _render(
        torch.tensor([[0.0, 0.0, z]], dtype=torch.float64), _quat_z(theta)[None],
        torch.tensor([[sx, sy, 0.05]], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64),
        torch.ones(1, 3, dtype=torch.float64), viewmats, Ks, w, h,
    )
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    cov = (f / z) ** 2 * rot @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ rot.T + 0.3 * torch.eye(2, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    d = torch.stack([xs - w / 2, ys - h / 2], dim=-1).double()
    a = 0.9 * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d))
    torch.testing.assert_close(alpha[0, 0, ..., 0], torch.where(a >= 1 / 255, a, torch.zeros_like(a)), atol=1e-10, rtol=0)


def test_composites_front_to_back_whatever_the_input_order():
    w = h = 8
    viewmats, Ks = _camera(w, h, 10.0)
    means = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # red far, green near
    scales = torch.full((2, 3), 2.0, dtype=torch.float64)  # 5-10 px sigma: nearly flat at the centre
    quats = _quat_z(0.0).expand(2, 4)
    colors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    opac = torch.tensor([0.5, 0.6], dtype=torch.float64)
    bg = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    rgb, alpha, _ = _render(means, quats, scales, opac, colors, viewmats, Ks, w, h, bg)
    flipped = [t.flip(0) for t in (means, quats, scales, opac, colors)]
    rgb_f, alpha_f, _ = _render(*flipped, viewmats, Ks, w, h, bg)
    torch.testing.assert_close(rgb, rgb_f)
    torch.testing.assert_close(alpha, alpha_f)
    # green 0.6 in front, red 0.5 through T = 0.4, blue background through T = 0.2
    expected = torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64)
    torch.testing.assert_close(rgb[0, 0, h // 2, w // 2], expected, atol=0.01, rtol=0)
    torch.testing.assert_close(alpha[0, 0, h // 2, w // 2, 0], torch.tensor(0.8, dtype=torch.float64), atol=0.01, rtol=0)


def _random_scene(n, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=gen, dtype=dtype)  # noqa: E731
    means = torch.cat([(r(n, 2) - 0.5) * 1.5, 2.0 + r(n, 1) * 2], dim=-1)
    return (
        means,
        torch.nn.functional.normalize(torch.randn(n, 4, generator=gen, dtype=dtype), dim=-1),
        0.1 + 0.3 * r(n, 3),
        0.3 + 0.4 * r(n),
        r(n, 3),
    )


def test_gradcheck_tiny_scene():
    w, h = 7, 5  # tiles of 4: partial tiles on both axes
    viewmats, Ks = _camera(w, h, 6.0)
    viewmats = torch.cat([viewmats, viewmats.clone()], dim=1)
    viewmats[0, 1, 0, 3] = 0.2  # second camera shifted sideways
    Ks = Ks.expand(1, 2, 3, 3)
    inputs = [t.requires_grad_() for t in _random_scene(3, seed=1)]
    bg = torch.tensor([[0.3, 0.5, 0.7]], dtype=torch.float64).expand(2, 3).contiguous().requires_grad_()

    def fn(means, quats, scales, opac, colors, bg):
        rgb, alpha, _ = _render(means, quats, scales, opac, colors, viewmats, Ks, w, h, bg, tile_size=4)
        return rgb, alpha

    assert torch.autograd.gradcheck(fn, (*inputs, bg), eps=1e-6, atol=1e-6)


def test_gradcheck_saturating_pixels_and_recompute():
    """Opaque layers: pixels stop at T = 1e-4 like gsplat; the recomputing backward gives the same gradients."""
    w, h = 6, 6
    viewmats, Ks = _camera(w, h, 5.0)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.05, 0.0, 2.5], [0.0, 0.05, 3.0], [0.0, 0.0, 3.5]], dtype=torch.float64)
    scales = torch.full((4, 3), 1.5, dtype=torch.float64)
    quats = _quat_z(0.3).expand(4, 4).contiguous()
    opac = torch.tensor([0.97, 0.98, 0.99, 0.9], dtype=torch.float64)
    colors = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    for saved in (1 << 25, 0):
        fn = lambda *a: _render(*a, viewmats, Ks, w, h, tile_size=4, saved_elems=saved)[:2]  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)
    _, alpha = fn(*inputs)
    assert alpha.max() > 1 - 1.01e-4  # some pixels did saturate


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_tiles_match_dense(tile_size):
    viewmats, Ks = _camera(29, 23, 25.0, dtype=torch.float32)
    scene = [t.float().requires_grad_() for t in _random_scene(150, seed=2)]
    bg = torch.tensor([[1.0, 1.0, 1.0]])
    out = {}
    for mode in ("tiles", "dense"):
        rgb, alpha, _ = _render(*scene, viewmats, Ks, 29, 23, bg, tile_size=tile_size, chunk_elems=20_000, mode=mode)
        grads = torch.autograd.grad((rgb * torch.linspace(0, 1, 3)).sum() + alpha.sum(), scene)
        out[mode] = (rgb, alpha, grads)
    for a, b in zip(out["tiles"][:2], out["dense"][:2]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    for a, b in zip(out["tiles"][2], out["dense"][2]):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_projection_matches_gsplat_reference():
    ref = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, opac, _ = _random_scene(200, seed=3)
    means = means + torch.tensor([0.0, 0.0, -1.5], dtype=torch.float64)  # some behind the near plane
    viewmats, Ks = _camera(64, 48, 40.0)
    covars = tr.quat_scale_to_covar(quats, scales)
    radii_ref, means2d_ref, depths_ref, conics_ref, _ = ref._fully_fused_projection(means, covars, viewmats[0], Ks[0], 64, 48)
    radii, means2d, depths, conics = tr.project_gaussians(means, covars, opac, viewmats[0], Ks[0], 64, 48)
    live = radii_ref.gt(0).all(-1)
    torch.testing.assert_close(means2d[live], means2d_ref[live])
    torch.testing.assert_close(depths, depths_ref)
    torch.testing.assert_close(conics[live], conics_ref[live])
    # Ours is gsplat's CUDA opacity-aware extent: never larger than the reference's 3.33 sigma box.
    assert (radii <= radii_ref).all() and radii.gt(0).any()
    assert not radii[~live].gt(0).any()


def test_culled_and_behind_camera_gaussians_give_background_and_zero_grads():
    viewmats, Ks = _camera(16, 12, 10.0, dtype=torch.float32)
    # behind the camera, far off-screen, at the camera centre, and one visible
    means = torch.tensor([[0.0, 0.0, -2.0], [50.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    other = [torch.nn.functional.normalize(torch.ones(4, 4), dim=-1), torch.full((4, 3), 0.1), torch.full((4,), 0.9), torch.ones(4, 3)]
    bg = torch.tensor([[0.25, 0.5, 0.75]])
    rgb, alpha, meta = _render(means, *other, viewmats, Ks, 16, 12, bg)
    assert meta["radii"][0, 0, :3].eq(0).all() and meta["radii"][0, 0, 3].gt(0).all()
    (grad,) = torch.autograd.grad(rgb.sum(), means)
    assert torch.isfinite(grad).all() and grad[:3].eq(0).all() and grad[3].ne(0).any()
    rgb, alpha, _ = _render(means[:3], *(t[:3] for t in other), viewmats, Ks, 16, 12, bg)
    assert torch.equal(alpha, torch.zeros_like(alpha))
    torch.testing.assert_close(rgb, bg.expand_as(rgb[0, 0])[None, None])


def test_render_gaussians_batches_items_independently():
    gen = torch.Generator().manual_seed(4)
    b, n, v, w, h = 2, 80, 3, 20, 14
    means = torch.cat([(torch.rand(b, n, 2, generator=gen) - 0.5), torch.rand(b, n, 1, generator=gen) - 0.5], -1)
    g = Gaussians(
        means=means,
        scales=0.05 + 0.1 * torch.rand(b, n, 3, generator=gen),
        quats=torch.nn.functional.normalize(torch.randn(b, n, 4, generator=gen), dim=-1),
        opacities=torch.rand(b, n, generator=gen),
        colors=torch.rand(b, n, 3, generator=gen),
    )
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[..., 2, 3] = -3.0  # cameras 3 units behind the origin, looking along +z
    c2w[:, 1, 0, 3] = 0.4
    c2w[:, 2, 1, 3] = -0.3
    intrinsics = torch.tensor([25.0, 25.0, w / 2, h / 2]).expand(b, v, 4)
    rgb, alpha = render_gaussians(g, intrinsics, c2w, w, h, (1.0, 1.0, 1.0))
    assert rgb.shape == (b, v, h, w, 3) and alpha.shape == (b, v, h, w, 1)
    rgb1, alpha1 = render_gaussians(g.item(1), intrinsics[1:], c2w[1:], w, h, torch.ones(3))
    torch.testing.assert_close(rgb[1:], rgb1)
    torch.testing.assert_close(alpha[1:], alpha1)
    assert not torch.allclose(rgb[0], rgb[1])


def test_camera_helpers_invert_and_build_K():
    c2w = torch.eye(4)
    c2w[:3, :3] = tr.quat_to_rotmat(torch.tensor([0.9, 0.1, -0.3, 0.2]))
    c2w[:3, 3] = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(c2w_to_viewmat(c2w), torch.linalg.inv(c2w), atol=1e-6, rtol=0)
    K = intrinsics_to_K(torch.tensor([10.0, 11.0, 3.0, 4.0]))
    torch.testing.assert_close(K, torch.tensor([[10.0, 0, 3], [0, 11, 4], [0, 0, 1]]))


def _two_scenes(num: int = 48, views: int = 3, res: int = 32):
    """Two scenes of random blobs, each seen by `views` ring cameras."""
    from zv_ray.splat.synthetic import random_blobs, ring

    a, b = random_blobs(num, seed=1), random_blobs(num, seed=2)
    g = Gaussians(**{k: torch.cat([getattr(a, k), getattr(b, k)]) for k in ("means", "scales", "quats", "opacities", "colors")})
    intrinsics, c2w = ring(views, res)
    return g, intrinsics.expand(2, -1, -1).float(), c2w.expand(2, -1, -1, -1).float()


def test_tile_intersections_count_what_the_binning_makes():
    """The bound that plans gsplat's calls is the binning's own count: the torch rasterizer's tile lists (its tile
    size) hold exactly as many (tile, Gaussian) pairs as tile_intersections predicts, camera by camera."""
    from zv_ray.splat.rasterize import tile_intersections

    g, intrinsics, c2w = _two_scenes()
    res, tile = 32, 8
    counts = tile_intersections(g, intrinsics, c2w, res, res, tile_size=tile)
    assert counts.shape == (2, 3) and bool((counts > 0).all())
    for b in range(2):
        item = g.item(b)
        covars = tr.quat_scale_to_covar(item.quats, item.scales)
        radii, means2d, depths, _ = tr.project_gaussians(item.means, covars, item.opacities, c2w_to_viewmat(c2w[b:b + 1]),
                                                         intrinsics_to_K(intrinsics[b:b + 1]), res, res)
        for v in range(3):
            flat_ids, _ = tr._tile_lists(means2d[0, v:v + 1], radii[0, v:v + 1], depths[0, v:v + 1], tile,
                                         res // tile, res // tile)
            assert len(flat_ids) == int(counts[b, v])


def test_split_calls_pick_the_coarsest_split_that_fits():
    from zv_ray.splat.rasterize import split_calls

    counts = torch.tensor([[10, 20, 30], [5, 5, 5]])
    assert split_calls(counts, 75) == (None, 75)
    assert split_calls(counts, 60) == ([(0, slice(None)), (1, slice(None))], 60)
    calls, largest = split_calls(counts, 30)
    assert largest == 30 and calls == [(b, slice(v, v + 1)) for b in range(2) for v in range(3)]
    with pytest.raises(RuntimeError, match=r"one camera alone needs 30 tile intersections \(scene 0, camera 2\)"):
        split_calls(counts, 29)


def test_split_rendering_gives_the_same_images_as_one_call():
    """Rendering split per scene or per camera (as gsplat is, near int32) changes no pixel; the stats name the
    largest call the plan allowed."""
    from zv_ray.splat.rasterize import GSPLAT_TILE, tile_intersections

    g, intrinsics, c2w = _two_scenes()
    counts = tile_intersections(g, intrinsics, c2w, 32, 32, tile_size=GSPLAT_TILE)
    one_rgb, one_alpha = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0))
    for limit, largest in ((int(counts.sum(1).max()), int(counts.sum(1).max())), (int(counts.max()), int(counts.max()))):
        stats: dict[str, int] = {}
        rgb, alpha = render_gaussians(g, intrinsics, c2w, 32, 32, (1.0, 1.0, 1.0), max_intersections=limit, stats=stats)
        torch.testing.assert_close(rgb, one_rgb, atol=1e-6, rtol=0)
        torch.testing.assert_close(alpha, one_alpha, atol=1e-6, rtol=0)
        assert stats == {"max_tile_intersections": largest}
