"""Pure-torch differentiable 3D Gaussian rasterizer with `gsplat.rasterization`'s inputs and outputs.

It is the CPU backend and the reference for the CUDA one, and follows gsplat 1.5 step by step:
- projection as gsplat cuda/_torch_impl.py `_fully_fused_projection` (EWA splatting, the Jacobian's 1.3 x FOV
  clamp, the 0.3 px^2 low-pass dilation `eps2d`) with the opacity-aware extent and culling of
  cuda/csrc/ProjectionEWA3DGSFused.cu (radius = ceil(min(3.33, sqrt(2 ln(255 o))) * sigma));
- compositing as cuda/csrc/RasterizeToPixels3DGSFwd.cu: pixel centres at +0.5, alpha = min(0.999, o exp(-q)),
  alphas under 1/255 skipped, a pixel stops before its transmittance would fall to 1e-4, then + T * background.

Speed on CPU comes from three things:
- tiles: each Gaussian is binned to the tiles its extent touches and every tile composites only its own
  depth-sorted list; tiles are processed in chunks of similar list length (sorted by length, each chunk
  padded to its own longest list) so padding stays small and one chunk holds at most `chunk_elems`
  (Gaussian, pixel) pairs;
- one batched matmul for all the pairs' Gaussian exponents of a chunk (the exponent is a quadratic in the
  pixel coordinates, taken from the tile centre so nothing cancels);
- a closed-form backward (the per-pixel recurrence gsplat's backward kernel evaluates, vectorized), so
  autograd never sees the [tiles, K, pixels] intermediates; a call that would keep more than
  `saved_elems` pairs alive for backward recomputes each chunk in backward instead, so its memory is
  bounded by one chunk.
`mode="dense"` composites every Gaussian at every pixel (chunked over pixels): the simple baseline the
tile path is tested and benchmarked against.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# gsplat cuda/include/Common.h and RasterizeToPixels3DGSFwd.cu.
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
MAX_EXTENT_SIGMAS = 3.33


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [..., 4] wxyz -> [..., 3, 3]
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return rot.reshape(quats.shape[:-1] + (3, 3))


def quat_scale_to_covar(
    quats: Tensor,  # [..., 4] wxyz
    scales: Tensor,  # [..., 3]
) -> Tensor:  # [..., 3, 3]
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [..., N, 3]
    covars: Tensor,  # [..., N, 3, 3]
    opacities: Tensor,  # [..., N]
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> radii [..., C, N, 2] int32 (0 = culled), means2d [..., C, N, 2], depths [..., C, N], conics [..., C, N, 3]."""
    rot, trans = viewmats[..., None, :3, :3], viewmats[..., None, :3, 3]  # [..., C, 1, 3, 3], [..., C, 1, 3]
    means_c = (rot @ means[..., None, :, :, None]).squeeze(-1) + trans  # [..., C, N, 3]
    covars_c = rot @ covars[..., None, :, :, :] @ rot.transpose(-1, -2)  # [..., C, N, 3, 3]

    tx, ty, tz = means_c.unbind(-1)
    in_depth = (tz > near_plane) & (tz < far_plane)
    # Culled Gaussians still flow through autograd: keep their divisions finite so they add 0, not NaN.
    z = torch.where(in_depth, tz, torch.ones_like(tz))
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [..., C, 1]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # The Jacobian is evaluated at a point clamped to 1.3 x the field of view (3DGS, gsplat _persp_proj).
    xc = z * torch.clamp(tx / z, min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx)
    yc = z * torch.clamp(ty / z, min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * xc / z**2, zero, fy / z, -fy * yc / z**2], dim=-1)
    jac = jac.reshape(z.shape + (2, 3))
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)  # [..., C, N, 2, 2]
    means2d = torch.stack([fx * tx / z + cx, fy * ty / z + cy], dim=-1)

    a = cov2d[..., 0, 0] + eps2d  # low-pass dilation: every splat covers at least ~1 pixel
    c = cov2d[..., 1, 1] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    with torch.no_grad():
        op = opacities[..., None, :].expand_as(tz)
        extent = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extent = extent.clamp(max=MAX_EXTENT_SIGMAS)
        rx = torch.ceil(extent * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extent * torch.sqrt(c.clamp_min(0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = in_depth & (det > 0) & (op >= ALPHA_THRESHOLD) & ((rx > 0) | (ry > 0)) & inside
        radii = (torch.stack([rx, ry], dim=-1) * valid[..., None]).to(torch.int32)
    return radii, means2d, tz, conics


def _pixel_features(pixels: Tensor) -> Tensor:  # [P, 2] centred pixel coordinates -> [6, P]
    u, v = pixels.unbind(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, v * v, u * v])


def _logit_coefficients(
    means2d: Tensor,  # [n, K, 2] in the same centred frame as the pixels
    conics: Tensor,  # [n, K, 3]
    opacities: Tensor,  # [n, K] (0 marks padding)
) -> Tensor:  # [n, K, 6]
    """log(o) - q(u, v) as a quadratic in the pixel coordinates, so every (Gaussian, pixel) logit of a
    chunk is one batched matmul with _pixel_features (coordinates are centred on the tile: no cancellation)."""
    mx, my = means2d.unbind(-1)
    a, b, c = conics.unbind(-1)
    used = opacities > 0
    log_o = torch.where(used, torch.log(torch.where(used, opacities, torch.ones_like(opacities))), -torch.inf)
    q0 = 0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my
    return torch.stack([log_o - q0, a * mx + b * my, c * my + b * mx, -0.5 * a, -0.5 * c, -b], dim=-1)


def _weights(coef: Tensor, feats: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """gsplat's front-to-back compositing of every (Gaussian, pixel) pair of a chunk: -> weights alpha * T
    [n, K, P], odds alpha / (1 - alpha) [n, K, P] (0 where skipped), where alpha hit the 0.999 clamp
    [n, K, P] (None when nowhere), final transmittance [n, P]."""
    # In-place where possible: on CPU a fresh [n, K, P] buffer costs more in page faults than the math.
    alpha = (coef.reshape(-1, 6) @ feats).view(coef.shape[0], coef.shape[1], -1).exp_()  # [n, K, P]
    clamped = alpha >= MAX_ALPHA if alpha.max() >= MAX_ALPHA else None
    alpha = F.threshold_(alpha.clamp_(max=MAX_ALPHA), ALPHA_THRESHOLD, 0.0)  # faint splats are skipped
    trans = torch.rsub(alpha, 1.0)
    odds = alpha.div_(trans)  # alpha / (1 - alpha)
    trans.cumprod_(dim=1)  # transmittance behind each Gaussian
    final = trans[:, -1].clone()
    if (final <= MIN_TRANSMITTANCE).any():
        # gsplat stops a pixel before the Gaussian that would take T to 1e-4: the kept ones are a prefix.
        keep = trans > MIN_TRANSMITTANCE
        odds.mul_(keep)
        final = torch.where(keep, trans, 1.0).amin(dim=1)
    weights = trans.mul_(odds)  # alpha * transmittance in front
    return weights, odds, clamped, final


class _Composite(torch.autograd.Function):
    """Alpha compositing of depth-sorted Gaussians with a closed-form backward: the per-pixel recurrence of
    gsplat's RasterizeToPixels3DGSBwd.cu, vectorized over the chunk. With `recompute` the backward redoes
    the forward instead of keeping weights and odds (2 x [n, K, P] floats) alive until backward."""

    @staticmethod
    def forward(ctx, coef: Tensor, colors: Tensor, feats: Tensor, recompute: bool) -> tuple[Tensor, Tensor]:
        # coef [n, K, 6], colors [n, K, D], feats [6, P] -> colour [n, P, D], transmittance [n, P]
        weights, odds, clamped, final = _weights(coef, feats)
        ctx.recompute = recompute
        ctx.save_for_backward(coef, colors, feats, final, *(() if recompute else (weights, odds, clamped)))
        # Products are arranged with the small colour axis leading: several times faster batched GEMMs on CPU.
        return torch.bmm(colors.transpose(1, 2), weights).transpose(1, 2), final

    @staticmethod
    def backward(ctx, g_rgb: Tensor, g_final: Tensor):
        coef, colors, feats, final, *kept = ctx.saved_tensors
        weights, odds, clamped = _weights(coef, feats)[:3] if ctx.recompute else kept
        g_rgb_t = g_rgb.transpose(1, 2)  # [n, D, P]
        contrib = torch.bmm(colors, g_rgb_t).mul_(weights)  # [n, K, P] w_k (c_k . dL/dC)
        behind = torch.cumsum(contrib, dim=1).neg_().add_(contrib.sum(dim=1, keepdim=True))  # Gaussians behind k
        # dL/dlogit = alpha dL/dalpha, with dL/dalpha = T_k c_k.g - (behind_k + T_final dL/dT_final) / (1 - alpha)
        g_logit = contrib.sub_(behind.add_((g_final * final)[:, None, :]).mul_(odds))
        if clamped is not None:
            g_logit.masked_fill_(clamped, 0.0)  # alpha clamped at 0.999: no gradient, as in gsplat
        g_coef = (g_logit.view(-1, g_logit.shape[-1]) @ feats.T).view(coef.shape)
        return g_coef, torch.bmm(g_rgb_t, weights.transpose(1, 2)).transpose(1, 2), None, None


def _composite(
    means2d: Tensor,  # [n, K, 2] depth-sorted Gaussians, in the pixels' centred frame
    conics: Tensor,  # [n, K, 3]
    opacities: Tensor,  # [n, K] (0 for padding)
    colors: Tensor,  # [n, K, D]
    pixels: Tensor,  # [P, 2] pixel centres, centred frame (shared by the n groups)
    recompute: bool,
) -> tuple[Tensor, Tensor]:
    """-> colour [n, P, D] (background excluded), transmittance [n, P]."""
    coef = _logit_coefficients(means2d, conics, opacities)
    return _Composite.apply(coef, colors, _pixel_features(pixels), recompute)


def _tile_lists(
    means2d: Tensor,  # [I, N, 2]
    radii: Tensor,  # [I, N, 2]
    depths: Tensor,  # [I, N]
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
) -> tuple[Tensor, Tensor]:
    """Bin Gaussians to tiles: -> flat (image * N + gaussian) ids sorted by (tile, depth) [M], and per-tile counts [I * tiles]."""
    num_images, n = depths.shape
    img, gid = (radii > 0).any(-1).nonzero(as_tuple=True)
    order = torch.argsort(depths[img, gid])  # depth-sorted first, then a stable sort by tile keeps depth order
    img, gid = img[order], gid[order]
    m, r = means2d[img, gid], radii[img, gid].to(means2d.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    w = x1 - x0
    counts = w * (y1 - y0)
    src = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    local = torch.arange(len(src), device=src.device) - (torch.cumsum(counts, 0) - counts)[src]
    tile = (y0[src] + local // w[src]) * tiles_x + x0[src] + local % w[src]
    key = img[src] * (tiles_x * tiles_y) + tile
    key, perm = torch.sort(key, stable=True)
    flat_ids = (img * n + gid)[src[perm]]
    return flat_ids, torch.bincount(key, minlength=num_images * tiles_x * tiles_y)


def _chunks(sorted_counts: list[int], group: int, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, K) runs over count-sorted tiles, each as long as tiles * K * pixels-per-tile fits the budget."""
    out, start = [], 0
    while start < len(sorted_counts):
        end = start + 1
        while end < len(sorted_counts) and (end + 1 - start) * max(sorted_counts[end], 1) * group <= budget:
            end += 1
        out.append((start, end, sorted_counts[end - 1]))
        start = end
    return out


def _rasterize_tiles(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    colors: Tensor,  # [I, N, D]
    radii: Tensor,  # [I, N, 2]
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    tile_size: int,
    chunk_elems: int,
    saved_elems: int,
) -> tuple[Tensor, Tensor]:
    num_images, n = depths.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    with torch.no_grad():
        flat_ids, counts = _tile_lists(means2d.detach(), radii, depths.detach(), tile_size, tiles_x, tiles_y)
        offsets = torch.cumsum(counts, 0) - counts
        tile_order = torch.argsort(counts)
        sorted_counts = counts[tile_order].tolist()
    dev, dtype = means2d.device, means2d.dtype
    ar = torch.arange(tile_size, device=dev, dtype=dtype) + 0.5 - 0.5 * tile_size
    pixels = torch.stack(torch.meshgrid(ar, ar, indexing="xy"), dim=-1).reshape(-1, 2)  # [P, 2] from the tile centre
    flat = lambda t: t.reshape(num_images * n, *t.shape[2:])  # noqa: E731
    means2d, conics, opacities, colors = flat(means2d), flat(conics), flat(opacities), flat(colors)

    rgbs, trans = [], []
    chunks = _chunks(sorted_counts, tile_size * tile_size, chunk_elems)
    recompute = sum((end - start) * k for start, end, k in chunks) * tile_size**2 > saved_elems
    for start, end, k in chunks:
        tiles = tile_order[start:end]
        if k == 0:
            rgbs.append(colors.new_zeros(len(tiles), pixels.shape[0], colors.shape[-1]))
            trans.append(colors.new_ones(len(tiles), pixels.shape[0]))
            continue
        t_in_img = tiles % (tiles_x * tiles_y)
        centre = (torch.stack([t_in_img % tiles_x, t_in_img // tiles_x], dim=-1).to(dtype) + 0.5) * tile_size
        slot = torch.arange(k, device=dev)
        used = slot < counts[tiles, None]  # [n, K]
        ids = flat_ids[(offsets[tiles, None] + slot).clamp(max=len(flat_ids) - 1)]
        rgb, t = _composite(means2d[ids] - centre[:, None, :], conics[ids], opacities[ids] * used, colors[ids], pixels, recompute)
        rgbs.append(rgb)
        trans.append(t)
    inverse = torch.argsort(tile_order)
    rgb = torch.cat(rgbs)[inverse].reshape(num_images, tiles_y, tiles_x, tile_size, tile_size, -1)
    t = torch.cat(trans)[inverse].reshape(num_images, tiles_y, tiles_x, tile_size, tile_size)
    rgb = rgb.permute(0, 1, 3, 2, 4, 5).reshape(num_images, tiles_y * tile_size, tiles_x * tile_size, -1)
    t = t.permute(0, 1, 3, 2, 4).reshape(num_images, tiles_y * tile_size, tiles_x * tile_size)
    return rgb[:, :height, :width], t[:, :height, :width]


def _rasterize_dense(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    colors: Tensor,  # [I, N, D]
    radii: Tensor,  # [I, N, 2]
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    chunk_elems: int,
    saved_elems: int,
) -> tuple[Tensor, Tensor]:
    num_images, n = depths.shape
    order = torch.argsort(depths.detach(), dim=1)[..., None]  # [I, N, 1]
    take = lambda t: torch.take_along_dim(t, order, dim=1)  # noqa: E731
    live = (radii > 0).any(-1)
    means2d, conics, colors = take(means2d), take(conics), take(colors)
    opacities = take((opacities * live)[..., None])[..., 0]
    centre = torch.tensor([0.5 * width, 0.5 * height], device=depths.device, dtype=means2d.dtype)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=depths.device, dtype=means2d.dtype) + 0.5,
        torch.arange(width, device=depths.device, dtype=means2d.dtype) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2) - centre  # [H * W, 2] from the image centre
    means2d = means2d - centre
    step = max(1, chunk_elems // max(num_images * n, 1))
    recompute = num_images * n * height * width > saved_elems
    parts = [
        _composite(means2d, conics, opacities, colors, pixels[i : i + step], recompute)
        for i in range(0, height * width, step)
    ]
    rgb = torch.cat([p[0] for p in parts], dim=1).reshape(num_images, height, width, -1)
    trans = torch.cat([p[1] for p in parts], dim=1).reshape(num_images, height, width)
    return rgb, trans


def rasterization(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4] wxyz
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., N, D]
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,  # [..., C, D]
    tile_size: int = 8,
    chunk_elems: int = 1 << 21,
    saved_elems: int = 1 << 25,
    mode: Literal["tiles", "dense"] = "tiles",
    sh_degree: None = None,
) -> tuple[Tensor, Tensor, dict]:
    """gsplat.rasterization (classic mode, colours given directly, sh_degree=None) in pure torch.

    -> render_colors [..., C, H, W, D], render_alphas [..., C, H, W, 1], meta (radii, means2d, depths, conics).
    """
    if sh_degree is not None:
        raise ValueError("the torch rasterizer takes colours directly (sh_degree=None), as gsplat's classic mode")
    batch = means.shape[:-2]
    n, num_cams = means.shape[-2], viewmats.shape[-3]
    if colors.shape != batch + (n, colors.shape[-1]):
        raise ValueError(f"colors must be [..., N, D] = {tuple(batch + (n,))} + (D,), got {tuple(colors.shape)}")
    covars = quat_scale_to_covar(quats, scales)
    radii, means2d, depths, conics = project_gaussians(
        means, covars, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane
    )
    num_images = math.prod(batch) * num_cams
    per_image = lambda t: t.reshape(num_images, n, *t.shape[len(batch) + 2 :])  # noqa: E731
    per_cam = lambda t: t[..., None, :, :].expand(batch + (num_cams,) + t.shape[-2:])  # noqa: E731
    args = (
        per_image(means2d),
        per_image(conics),
        per_image(per_cam(opacities[..., None]))[..., 0],
        per_image(per_cam(colors)),
        per_image(radii),
        per_image(depths),
    )
    if mode == "tiles":
        rgb, trans = _rasterize_tiles(*args, width, height, tile_size, chunk_elems, saved_elems)
    elif mode == "dense":
        rgb, trans = _rasterize_dense(*args, width, height, chunk_elems, saved_elems)
    else:
        raise ValueError(f"mode must be 'tiles' or 'dense', got {mode!r}")
    transmittance = trans[..., None]  # [I, H, W, 1]
    if backgrounds is not None:
        rgb = rgb + transmittance * backgrounds.reshape(num_images, 1, 1, -1)
    out_shape = batch + (num_cams, height, width)
    meta = {"radii": radii, "means2d": means2d, "depths": depths, "conics": conics}
    return rgb.reshape(out_shape + (-1,)), (1 - transmittance).reshape(out_shape + (1,)), meta
