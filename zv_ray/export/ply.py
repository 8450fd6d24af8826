"""Gaussians <-> the standard 3D Gaussian Splatting .ply (graphdeco-inria/gaussian-splatting
scene/gaussian_model.py save_ply/load_ply), which common 3DGS viewers open.

One binary little-endian `vertex` element of float32 properties, in this order:
x y z nx ny nz f_dc_0..2 [f_rest_0..44] opacity scale_0..2 rot_0..3, stored before activation:
opacity as a logit, scales as logs, colour as the degree-0 SH coefficient f_dc = (rgb - 0.5) / C0,
quaternion w first, normals zero. Our Gaussians have no view-dependent colour: f_rest is written as zeros
(sh_degree 3 by default, the layout viewers expect) and ignored on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from zv_ray.io.atomic import atomic_path

from zv_ray.splat.gaussians import Gaussians

SH_C0 = 0.28209479177387814
_EPS = 1e-7  # keeps logit and log finite for opacities at 0 or 1 and zero scales


def ply_properties(sh_degree: int = 3) -> list[str]:
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def save_ply(path: str | Path, gaussians: Gaussians, sh_degree: int = 3) -> Path:
    """Write one object's Gaussians (B=1) atomically (temp file in the same folder, then rename)."""
    if gaussians.batch_size != 1:
        raise ValueError(f"save_ply writes one object; got a batch of {gaussians.batch_size} (use gaussians.item(b))")
    g = gaussians.detach().to("cpu", torch.float64)
    n = g.num
    opacity = g.opacities[0].clamp(_EPS, 1 - _EPS)
    columns = [
        g.means[0],
        torch.zeros(n, 3, dtype=torch.float64),
        (g.colors[0] - 0.5) / SH_C0,
        torch.zeros(n, 3 * ((sh_degree + 1) ** 2 - 1), dtype=torch.float64),
        torch.log(opacity / (1 - opacity))[:, None],
        torch.log(g.scales[0].clamp_min(_EPS)),
        g.quats[0],
    ]
    data = torch.cat(columns, dim=1).numpy().astype(np.float32)
    names = ply_properties(sh_degree)
    vertex = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = data[:, i]
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(tmp))
    return path


def load_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS .ply (ours or any 3DGS trainer's; f_rest ignored) into activated Gaussians (B=1)."""
    vertex = PlyData.read(str(path))["vertex"]
    names = {p.name for p in vertex.properties}
    needed = [n for n in ply_properties(0) if n not in ("nx", "ny", "nz")]
    missing = [k for k in needed if k not in names]
    if missing:
        raise ValueError(f"{path} is not a 3D Gaussian Splatting .ply: vertex lacks {missing}")

    def col(*keys: str) -> torch.Tensor:  # [1, N, len(keys)]
        return torch.from_numpy(np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=-1))[None]

    return Gaussians(
        means=col("x", "y", "z"),
        scales=torch.exp(col("scale_0", "scale_1", "scale_2")),
        quats=torch.nn.functional.normalize(col("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        opacities=torch.sigmoid(col("opacity"))[..., 0],
        colors=(0.5 + SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2")).clamp(0, 1),
    )
