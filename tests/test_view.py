"""`zv-ray view`: splats, frusta and augmentation switches, its sources, reconstruction scores, clear errors,
and the viewer itself in headless Chromium (those tests skip only where Chromium is not installed)."""

from __future__ import annotations

import json
import re
import socket
import time

import numpy as np
import pytest
import torch
from conftest import GSO_DIR, REPO
from typer.testing import CliRunner

from zv_ray.config import load_config
from zv_ray.eval.evaluate import image_scores
from zv_ray.data.meshes import load_object
from zv_ray.eval.gso import find_objects
from zv_ray.eval.loading import load_model
from zv_ray.eval.protocol import EvalProtocol
from zv_ray.export.ply import load_ply, save_ply
from zv_ray.inference.views import uint8_images
from zv_ray.render.cameras import ring_cameras
from zv_ray.splat.gaussians import Gaussians
from zv_ray.splat.rasterize import render_gaussians
from zv_ray.splat.synthetic import random_blobs
from zv_ray.view.app import Viewer, ply_bytes
from zv_ray.view.browser import HeadlessChromium, content_fraction, find_chromium, wait_for_client
from zv_ray.view.predictor import Predictor
from zv_ray.view.scene import camera_pose, splat_arrays
from zv_ray.view.sources import DatasetObjects, GeneratedObjects, PlyFile, RealObjects

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (bash scripts/setup_browser.sh)")
needs_gso = pytest.mark.skipif(not GSO_DIR.is_dir(), reason=f"shared GSO objects not found at {GSO_DIR}")


@pytest.fixture(scope="module")
def tiny():
    return load_config(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    """An untrained tiny GS-LRM saved like a training run saves it."""
    from zv_ray.model.gslrm import GSLRM
    from zv_ray.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), model=GSLRM(tiny.model), optimizer=None, step=7, cfg=tiny)


def make_predictor(checkpoint, num_test_views: int = 6) -> Predictor:
    loaded = load_model(checkpoint, torch.device("cpu"))
    return Predictor(loaded, EvalProtocol.for_config(loaded.cfg, num_test_views=num_test_views))


def test_splats_carry_the_gaussians_covariances():
    half = np.sqrt(0.5)
    g = Gaussians(  # 90 degrees about z swaps the x and y axes: scales (1, 2, 3) -> variances (4, 1, 9)
        means=torch.tensor([[[0.1, 0.2, 0.3]]]), scales=torch.tensor([[[1.0, 2.0, 3.0]]]),
        quats=torch.tensor([[[half, 0.0, 0.0, half]]]), opacities=torch.tensor([[0.25]]),
        colors=torch.tensor([[[0.2, 0.4, 0.6]]]),
    )
    arrays = splat_arrays(g)
    np.testing.assert_allclose(arrays["covariances"][0], np.diag([4.0, 1.0, 9.0]), atol=1e-6)
    np.testing.assert_allclose(arrays["opacities"], [[0.25]])
    shapes = {k: v.shape for k, v in arrays.items()}
    assert shapes == {"centers": (1, 3), "covariances": (1, 3, 3), "rgbs": (1, 3), "opacities": (1, 1)}


def test_a_ply_shows_the_gaussians_it_holds(tmp_path):
    blobs = random_blobs(50, seed=3)
    path = save_ply(tmp_path / "g.ply", blobs)
    item = PlyFile(path).item(0)
    assert "50 Gaussians" in item.info and item.mesh is None
    shown, original = splat_arrays(item.gaussians), splat_arrays(blobs)
    for key in original:
        np.testing.assert_allclose(shown[key], original[key], rtol=1e-4, atol=1e-5)
    downloaded = tmp_path / "downloaded.ply"  # what the panel's download button sends
    downloaded.write_bytes(ply_bytes(item))
    np.testing.assert_allclose(load_ply(downloaded).means, blobs.means, atol=1e-6)


def test_frusta_sit_at_the_cameras():
    import viser.transforms as vtf

    for c2w in ring_cameras(4, [20.0], 2.7, 50.0, 64)[1]:
        wxyz, position = camera_pose(c2w)
        np.testing.assert_allclose(vtf.SO3(wxyz).as_matrix(), c2w[:3, :3], atol=1e-5)
        np.testing.assert_allclose(position, c2w[:3, 3])


def test_augmentation_switches_change_only_their_part(tiny):
    source = GeneratedObjects(tiny.zeroverse, seed=0, first_id=0, count=2)
    params = lambda: json.loads(source.item(0).details)  # noqa: E731
    sampled = params()
    source.modes.update({"cut": "forced", "wireframe": "forced"})
    forced = params()
    assert forced["boolean"]["applied"] and forced["wireframe"]["applied"]
    assert "wireframe" in source.item(0).mesh.geometry
    assert forced["parts"] == sampled["parts"]  # every stage draws its own stream
    source.modes.update({"cut": "off", "wireframe": "off", "height fields": "off"})
    off = params()
    assert not off["boolean"]["applied"] and not off["wireframe"]["applied"]
    assert all(f is None for part in off["parts"] for f in part["heightfields"])
    assert [p["semi_axes"] for p in off["parts"]] == [p["semi_axes"] for p in sampled["parts"]]
    info = source.item(0).info
    assert "**cut**: none" in info and "**wireframe**: none" in info and "| 1 |" in info
    assert source.key(0) != (0, ("sampled",) * 3)  # a switched object is cached apart from the sampled one


def test_dataset_objects_show_their_views_and_regenerated_mesh(tmp_path, tiny, checkpoint):
    from zv_ray.data.parquet import write_shard
    from zv_ray.data.schema import records_to_table
    from zv_ray.data.records import render_object
    from zv_ray.render.renderer import Renderer
    from zv_ray.zeroverse import generate_object

    cfg = tiny.model_copy(update={"render": tiny.render.model_copy(update={"num_views": 6, "resolution": 32})})
    with Renderer.from_config(cfg.render) as renderer:
        records = [render_object(cfg.seed, i, cfg, renderer) for i in (3, 5)]
    write_shard(records_to_table(records, "png"), tmp_path)

    source = DatasetObjects(tmp_path)
    assert source.labels == ["object 3", "object 5"]
    item = source.item(1)
    np.testing.assert_array_equal(uint8_images(item.views.images[0]), records[1]["rgba"][..., :3])
    np.testing.assert_allclose(item.views.c2w[0], records[1]["c2w"])
    expected = generate_object(cfg.seed, 5, cfg.zeroverse).scene.geometry["body"]
    np.testing.assert_allclose(item.mesh.geometry["body"].vertices, expected.vertices)
    assert "6 views of 32×32 px" in item.info

    predictor = make_predictor(checkpoint)
    obj = predictor.dataset_views("object 5", records[1])
    order = [0, 2, 3, 5, 1, 4]  # 4 inputs spread over 6 views, then the other two held out
    np.testing.assert_array_equal(uint8_images(obj.views.images[0]), records[1]["rgba"][order, ..., :3])
    assert obj.views.num_inputs == 4
    calls = []
    predictor.loaded.model.register_forward_hook(lambda *_: calls.append(1))
    shown = DatasetObjects(tmp_path, predictor).item(0)
    assert shown.views.images.shape[1] == 6 and shown.views.num_inputs == 4 and "on 2 held-out views" in shown.info
    assert len(calls) == 1  # the scored Gaussians are the shown ones: one prediction per object


@needs_gso
def test_reconstruction_shows_the_gaussians_it_scores(checkpoint):
    predictor = make_predictor(checkpoint)
    source = RealObjects(GSO_DIR, predictor=predictor)
    item = source.item(0)
    cfg, n = predictor.loaded.cfg, predictor.protocol.num_inputs
    res = cfg.train.resolution
    assert item.gaussians.num == n * res * res and item.views.images.shape[1] == n and item.mesh is not None
    assert "checkpoint step 7" in item.info
    # Splatting the shown Gaussians at the held-out views gives the PSNR in the panel: they are the scored ones.
    batch = predictor.protocol_views(source.labels[0], load_object(find_objects(GSO_DIR)[0])).views
    rgb, _ = render_gaussians(item.gaussians, batch.intrinsics[:, n:], batch.c2w[:, n:], res, res, cfg.train.background)
    psnr = image_scores(rgb[0].permute(0, 3, 1, 2).clamp(0, 1), batch.images[0, n:])["psnr"].mean()
    assert f"PSNR {float(psnr):.2f} dB" in item.info
    assert re.search(r"on 6 held-out views from 4 inputs", item.info)


def test_the_panel_steps_through_objects_and_switches_augmentations(tiny):
    viewer = Viewer(GeneratedObjects(tiny.zeroverse, seed=0, first_id=0, count=3), "test")
    flush = lambda: viewer.run(lambda: None).result()  # noqa: E731 - the worker runs requests in order
    try:
        viewer.serve("127.0.0.1", 0)
        assert viewer.item.title == "Zeroverse object 0" and len(viewer.layers["mesh"]) == 1
        viewer.slider.value = 2  # as dragging the slider sets it
        flush()
        assert viewer.item.title == "Zeroverse object 2" and "**wireframe**: none" in viewer.item.info
        viewer.mode_switches["wireframe"].value = "forced"
        flush()
        assert "wireframe" in viewer.item.mesh.geometry and "**wireframe**: none" not in viewer.item.info
        viewer.layer_boxes["mesh"].value = False
        assert not viewer.layers["mesh"][0].visible
    finally:
        viewer.close()


def cli(*args: str):
    from zv_ray.cli import app

    return CliRunner().invoke(app, ["view", *args])


def test_bad_inputs_fail_in_one_line_before_serving(tmp_path, checkpoint):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    cases = [
        ((f"--objects={tmp_path / 'missing'}",), "objects folder not found"),
        ((f"--dataset={tmp_path / 'missing'}",), "no dataset at"),
        ((str(tmp_path / "missing.ply"),), ".ply not found"),
        ((f"--checkpoint={not_a_checkpoint}", "--generate=1"), "notes.txt is not a zv-ray checkpoint"),
        ((f"--checkpoint={tmp_path}", "--generate=1"), "no checkpoint at"),
        (("--generate=1", f"--objects={GSO_DIR}"), "give exactly one of"),
        ((f"--checkpoint={checkpoint}", str(checkpoint)), "a .ply already holds Gaussians"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, (args, result.output)


def test_a_taken_port_is_an_error_not_another_port(tiny):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("--generate=1", f"--config={REPO / 'configs' / 'tiny.yaml'}", f"--port={port}")
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.output and "--port" in result.output


def open_in_chromium(viewer: Viewer):
    server = viewer.serve("127.0.0.1", 0)
    browser = HeadlessChromium(f"http://127.0.0.1:{server.get_port()}", width=800, height=600, timeout=45)
    return server, browser


@needs_chromium
def test_chromium_shows_a_generated_object(tiny):
    viewer = Viewer(GeneratedObjects(tiny.zeroverse, seed=0, first_id=0, count=2), "test")
    try:
        server, browser = open_in_chromium(viewer)
        with browser:
            wait_for_client(server, browser.timeout)
            _image, fraction = browser.wait_for_content()
        assert fraction > 0.05  # the textured object covers the canvas centre, not just the background
    finally:
        viewer.close()


@needs_chromium
def test_chromium_shows_splats_and_hides_them(tmp_path):
    viewer = Viewer(PlyFile(save_ply(tmp_path / "blobs.ply", random_blobs(300, seed=1))), "test")
    try:
        server, browser = open_in_chromium(viewer)
        with browser:
            wait_for_client(server, browser.timeout)
            _image, shown = browser.wait_for_content()
            viewer.layer_boxes["gaussians"].value = False  # the panel's checkbox, as a click sets it
            deadline = time.monotonic() + browser.timeout
            while (hidden := content_fraction(browser.canvas_screenshot())) > 0.001 and time.monotonic() < deadline:
                time.sleep(0.3)
        assert shown > 0.05
        assert hidden <= 0.001  # the same canvas goes blank: the check can fail
    finally:
        viewer.close()
