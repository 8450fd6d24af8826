"""`zv-ray reconstruct`: camera files are read or rejected with the file and field named; good inputs give a .ply and a video."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
from conftest import GSO_DIR
from test_eval_run import _invoke, tiny_checkpoint  # noqa: F401 - the fixture is used by name

from zv_ray.data.camera_file import CameraFileError, frames_for_images, read_camera_file, read_image
from zv_ray.eval.protocol import EvalProtocol, input_cameras
from zv_ray.render.cameras import c2w_to_w2c

K, C2W = input_cameras(EvalProtocol(), 64)  # [4, 4], [4, 4, 4]


def _frame(i: int, **extra) -> dict:
    fx, fy, cx, cy = K[i].tolist()
    return {"file": f"view_{i}.png", "fx": fx, "fy": fy, "cx": cx, "cy": cy, "c2w": C2W[i].tolist(), **extra}


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_reads_the_project_format_and_the_official_w2c_one(tmp_path):
    ours = read_camera_file(_write(tmp_path / "a.json", {"frames": [_frame(i, w=64, h=64) for i in range(4)]}))
    official = [{"file_path": f"rgba/view_{i}.png", "w": 64, "h": 64, **{k: _frame(i)[k] for k in ("fx", "fy", "cx", "cy")},
                 "w2c": c2w_to_w2c(C2W[i].astype(np.float64)).tolist()} for i in range(4)]
    theirs = read_camera_file(_write(tmp_path / "b.json", {"frames": official}))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-5)
        np.testing.assert_allclose(a.intrinsics, b.intrinsics)
        assert a.size == b.size == (64, 64)
    images = [tmp_path / f"view_{i}.png" for i in (2, 0, 3, 1)]
    assert [f.file for f in frames_for_images(theirs, images, "b.json")] == [f"rgba/view_{i}.png" for i in (2, 0, 3, 1)]


@pytest.mark.parametrize(
    "frames, match",
    [
        ("not json", "not valid JSON"),
        ({"views": []}, r'expected \{"frames"'),
        ([_frame(0), {k: v for k, v in _frame(1).items() if k != "fy"}], r"frames\[1\]\.fy: expected a finite number"),
        ([_frame(0, fx=-5.0)], r"frames\[0\]\.fx: must be positive"),
        ([{**_frame(0), "c2w": C2W[0][:3].tolist()}], r"frames\[0\]\.c2w: expected a finite 4x4"),
        ([{**_frame(0), "c2w": (np.diag([2.0, 2, 2, 1]) @ C2W[0]).tolist()}], r"frames\[0\]\.c2w: .* not a rotation"),
        ([{**_frame(0), "w2c": C2W[0].tolist()}], r"frames\[0\]: needs exactly one of 'c2w'"),
        ([{k: v for k, v in _frame(0).items() if k != "c2w"}], r"frames\[0\]: needs exactly one of 'c2w'"),
    ],
)
def test_bad_camera_files_name_the_file_and_field(tmp_path, frames, match):
    path = tmp_path / "cams.json"
    path.write_text(frames if isinstance(frames, str) else json.dumps(frames if isinstance(frames, dict) else {"frames": frames}))
    with pytest.raises(CameraFileError, match=match) as err:
        read_camera_file(path)
    assert str(path) in str(err.value)


def test_frames_must_cover_every_image(tmp_path):
    frames = read_camera_file(_write(tmp_path / "c.json", {"frames": [_frame(i) for i in range(4)]}))
    with pytest.raises(CameraFileError, match="no frame for other.png"):
        frames_for_images(frames, [tmp_path / "view_0.png", tmp_path / "other.png"], "c.json")
    unnamed = read_camera_file(_write(tmp_path / "d.json", {"frames": [{**_frame(i), "file": None} for i in range(4)]}))
    with pytest.raises(CameraFileError, match="4 frames without file names for 2 images"):
        frames_for_images(unnamed, [tmp_path / "a.png", tmp_path / "b.png"], "d.json")


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255
    iio.imwrite(tmp_path / "x.png", rgba)
    out = read_image(tmp_path / "x.png")
    assert out[0, 0].tolist() == [200, 0, 0, 255] and out[7, 7].tolist() == [255, 255, 255, 0]


@pytest.fixture
def posed_views(tmp_path):
    """Four input-protocol renders of a real object as RGBA PNGs plus their camera file."""
    if not GSO_DIR.is_dir():
        pytest.skip(f"shared GSO objects not found at {GSO_DIR}")
    from zv_ray.data.meshes import load_object
    from zv_ray.render.renderer import Renderer

    with Renderer(64) as renderer:
        views = renderer.render(load_object(GSO_DIR / "Android_Figure_Orange" / "model.obj"), K, C2W)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"view_{i}.png")
        iio.imwrite(paths[-1], np.concatenate([views.rgb[i], views.alpha[i, ..., None]], axis=-1))
    cameras = _write(tmp_path / "cameras.json", {"frames": [_frame(i, w=64, h=64) for i in range(4)]})
    return [str(p) for p in paths], cameras


def test_reconstruct_writes_ply_and_turntable(posed_views, tiny_checkpoint, tmp_path):
    from plyfile import PlyData

    images, cameras = posed_views
    ckpt, cfg = tiny_checkpoint
    out = tmp_path / "recon"
    result = _invoke("reconstruct", *images, "--cameras", cameras, "--checkpoint", str(ckpt), "--out", str(out),
                     "--frames", "6", "--device", "cpu")
    assert result.exit_code == 0, result.output
    vertex = PlyData.read(out / "gaussians.ply")["vertex"]
    assert vertex.count == 4 * cfg.train.resolution**2  # one Gaussian per input pixel at the model's resolution
    for name in ("x", "y", "z", "opacity", "scale_0", "rot_0", "f_dc_0"):
        assert np.isfinite(vertex[name]).all()
    with imageio.get_reader(out / "turntable.mp4", format="FFMPEG") as reader:
        assert reader.count_frames() == 6
        assert reader.get_data(0).shape == (cfg.train.resolution, cfg.train.resolution, 3)


def test_reconstruct_rejects_bad_inputs_clearly(posed_views, tiny_checkpoint, tmp_path):
    images, cameras = posed_views
    ckpt, _ = tiny_checkpoint
    run = lambda imgs, cams=cameras: _invoke("reconstruct", *imgs, "--cameras", cams, "--checkpoint", str(ckpt),  # noqa: E731
                                             "--out", str(tmp_path / "out"))

    result = run(images[:3])
    assert result.exit_code == 1 and "got 3 images but the checkpoint's model takes train.num_input_views = 4" in result.output

    (tmp_path / "odd").mkdir()
    iio.imwrite(tmp_path / "odd" / "view_3.png", np.full((48, 64, 3), 255, np.uint8))
    result = run(images[:3] + [str(tmp_path / "odd" / "view_3.png")])
    assert result.exit_code == 1 and "images differ in size: view_0.png is 64x64 but view_3.png is 64x48" in result.output

    bad = _write(tmp_path / "bad.json", {"frames": [_frame(i) for i in range(3)] + [{**_frame(3), "c2w": "identity"}]})
    result = run(images, bad)
    assert result.exit_code == 1 and "bad.json: frames[3].c2w" in result.output

    result = run(images, str(tmp_path / "missing.json"))
    assert result.exit_code == 1 and "camera file not found" in result.output
    assert not (tmp_path / "out").exists()
