"""3DGS .ply export: exact layout as graphdeco-inria/gaussian-splatting writes it, round trip, atomic write."""

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from zv_ray.export import load_ply, save_ply
from zv_ray.splat import Gaussians, render_gaussians
from zv_ray.splat.synthetic import random_blobs, ring

C0 = 0.28209479177387814


def _expected_names(sh_degree=3):
    rest = [f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1))]
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_layout_is_the_3dgs_one(tmp_path):
    g = random_blobs(50, seed=0)
    path = save_ply(tmp_path / "obj.ply", g)
    raw = path.read_bytes()
    assert raw.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 50\n")
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == _expected_names()
    assert all(p.val_dtype == "f4" for p in vertex.properties)
    assert vertex.data.dtype == np.dtype([(n, "<f4") for n in _expected_names()])
    v = vertex.data
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], -1), g.means[0].numpy(), atol=1e-7)
    np.testing.assert_array_equal(np.stack([v["nx"], v["ny"], v["nz"]], -1), 0)
    np.testing.assert_allclose(v["f_dc_1"], (g.colors[0, :, 1].numpy() - 0.5) / C0, atol=1e-5)
    np.testing.assert_array_equal(v["f_rest_44"], 0)
    o = g.opacities[0].double().numpy()
    np.testing.assert_allclose(v["opacity"], np.log(o / (1 - o)), rtol=1e-5)
    np.testing.assert_allclose(v["scale_2"], np.log(g.scales[0, :, 2].numpy()), rtol=1e-5)
    np.testing.assert_allclose(v["rot_0"], g.quats[0, :, 0].numpy(), atol=1e-7)  # w first


def test_round_trip_renders_the_same(tmp_path):
    g = random_blobs(120, seed=1)
    back = load_ply(save_ply(tmp_path / "a" / "obj.ply", g))
    for name in ("means", "scales", "quats", "opacities", "colors"):
        torch.testing.assert_close(getattr(back, name), getattr(g, name), atol=1e-5, rtol=1e-5)
    intrinsics, c2w = ring(2, 24)
    a, _ = render_gaussians(g, intrinsics, c2w, 24, 24, (1.0, 1.0, 1.0))
    b, _ = render_gaussians(back, intrinsics, c2w, 24, 24, (1.0, 1.0, 1.0))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_extremes_stay_finite(tmp_path):
    g = random_blobs(4, seed=2)
    g = Gaussians(means=g.means, scales=torch.zeros_like(g.scales), quats=g.quats,
                  opacities=torch.tensor([[0.0, 1.0, 0.5, 0.5]]), colors=g.colors)
    path = save_ply(tmp_path / "obj.ply", g)
    assert [p.name for p in tmp_path.iterdir()] == ["obj.ply"]  # no temp file left behind
    v = PlyData.read(str(path))["vertex"].data
    assert all(np.isfinite(v[n]).all() for n in v.dtype.names)


def test_a_write_that_dies_halfway_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    """Readers never see a partial .ply: while writing, and after the writer fails (disk full), the name holds the
    previous file; the half-written temp file is removed."""
    final = tmp_path / "obj.ply"
    save_ply(final, random_blobs(3, seed=4))
    old = final.read_bytes()
    real_write = PlyData.write

    def dies_halfway(self, stream):
        buffer = io.BytesIO()
        real_write(self, buffer)
        with open(stream, "wb") if isinstance(stream, (str, Path)) else contextlib.nullcontext(stream) as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            assert final.read_bytes() == old  # mid-write, the final name is untouched
        raise OSError("No space left on device")

    monkeypatch.setattr(PlyData, "write", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_ply(final, random_blobs(50, seed=5))
    assert [p.name for p in tmp_path.iterdir()] == ["obj.ply"]
    assert final.read_bytes() == old


def test_batches_and_foreign_files_are_refused(tmp_path):
    g = random_blobs(4, seed=3)
    with pytest.raises(ValueError, match="one object"):
        save_ply(tmp_path / "two.ply", Gaussians.cat([g, g]))
    from plyfile import PlyElement
    points = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    PlyData([PlyElement.describe(points, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(ValueError, match="not a 3D Gaussian Splatting .ply"):
        load_ply(tmp_path / "points.ply")
