"""Real data beside Zeroverse: `zv-ray dataset --meshes` (real textured meshes rendered like Zeroverse objects),
`--rendered` and `zv-ray export` (the official folder layout both ways), and the `source` column.

Bad input is one line before any Ray work; a mesh that cannot be used is skipped, named and listed in skipped.json.
Only `test_meshes_export_and_import_through_the_cli` starts Ray (a local one, 4 meshes at 4 views x 32 px)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh
from conftest import REPO
from typer.testing import CliRunner

from zv_ray.config import load_config
from zv_ray.data.camera_file import CameraFileError
from zv_ray.data.layout import CAMERAS_FILE, find_object_folders, read_object_folder, write_object_folder
from zv_ray.data.meshes import UnusableMesh, load_textured, mesh_entries, meshes_under
from zv_ray.data.parquet import NothingRendered, read_shards, valid_shards, write_shard
from zv_ray.data.records import render_object, source_id
from zv_ray.data.schema import SCHEMA, SCHEMA_V1, SKIPPED, ZEROVERSE_SOURCE, records_to_table
from actors.samples import SampleActor
from zv_ray.pipeline import SKIPPED_FILE, _finish, _write_batch
from zv_ray.render.cameras import sample_cameras

TRAIN_GSO = REPO.parent / "shared" / "train" / "gso"
SCANS = ["Android_Figure_Chrome", "SCHOOL_BUS"]  # two of the smallest shared training scans
needs_scans = pytest.mark.skipif(not TRAIN_GSO.is_dir(), reason=f"shared training scans not found at {TRAIN_GSO}")
TINY = ["--views", "4", "--res", "32", "--set", "data.num_generator_actors=1"]


def broken_meshes(root: Path) -> dict[str, str]:
    """A folder of meshes that cannot be used -> {source: what its skip reason says}."""
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "model.obj").write_text("v 0 0\nf 1 2 banana\n")
    (root / "empty.glb").write_bytes(b"")
    (root / "plain").mkdir()
    trimesh.creation.box().export(root / "plain" / "box.obj")  # geometry, no UVs or image
    return {"mesh:broken/model.obj": "broken/model.obj", "mesh:empty.glb": "empty.glb",
            "mesh:plain/box.obj": "has no texture"}


def with_scans(root: Path, names: list[str]) -> Path:
    for name in names:
        shutil.copytree(TRAIN_GSO / name, root / name)
    return root


def one_line_error(monkeypatch, capsys, *args: str) -> str:
    """`zv-ray ARGS` through the real entry point: exit status 2 and the error line, with no Ray started."""
    import ray

    from zv_ray.cli import main

    monkeypatch.setattr(sys, "argv", ["zv-ray", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert not ray.is_initialized(), "the bad input was found after Ray started"
    return " ".join(err.split())


def test_unusable_meshes_are_named_with_the_reason(tmp_path):
    reasons = broken_meshes(tmp_path)
    for source, says in reasons.items():
        with pytest.raises(UnusableMesh, match=says) as err:
            load_textured(str(tmp_path / source.removeprefix("mesh:")), 1.8)
        assert str(tmp_path) in str(err.value)  # the file is named


def test_meshes_are_found_in_sub_folders_and_loose(tmp_path):
    broken_meshes(tmp_path)
    (tmp_path / "notes.txt").write_text("not a mesh")
    files, folders = mesh_entries(str(tmp_path))
    assert [Path(f).name for f in files] == ["empty.glb"] and [Path(f).name for f in folders] == ["broken", "plain"]
    assert [Path(p).name for f in folders for p in meshes_under(f)] == ["model.obj", "box.obj"]


def test_a_folder_without_meshes_is_one_line_before_ray(tmp_path, monkeypatch, capsys):
    (tmp_path / "objects" / "a").mkdir(parents=True)
    (tmp_path / "objects" / "a" / "texture.png").write_bytes(b"")
    err = one_line_error(monkeypatch, capsys, "dataset", "--meshes", str(tmp_path / "objects"), "--out", str(tmp_path / "out"))
    assert f"error: no meshes under {tmp_path / 'objects'}: expected .obj, .glb, .gltf" in err
    assert not (tmp_path / "out").exists()  # nothing created either
    err = one_line_error(monkeypatch, capsys, "dataset", "--meshes", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert f"--meshes {tmp_path / 'nope'} is not a folder" in err


@needs_scans
def test_render_actor_skips_what_it_cannot_use_and_the_writer_lists_it(tmp_path):
    """The actor's batch carries rendered rows and skipped inputs in one schema; the shard keeps only the rendered."""
    from actors import MeshRenderActor

    root = with_scans(tmp_path / "meshes", SCANS[:1])
    reasons = broken_meshes(root)
    files, folders = mesh_entries(str(root))
    paths = files + [p for f in folders for p in meshes_under(f)]
    sources = ["mesh:" + str(Path(p).relative_to(root)) for p in paths]
    cfg = load_config(None, ["render.num_views=3", "render.resolution=16"])
    actor = MeshRenderActor(cfg.model_dump(mode="json"))
    try:
        table = actor({"path": np.array(paths), "source": np.array(sources)})
    finally:
        actor.renderer.close()
    assert table.schema.remove(table.schema.get_field_index(SKIPPED)).equals(SCHEMA, check_metadata=False)
    written = _write_batch(table, str(tmp_path / "out")).to_pylist()[0]
    scan = f"mesh:{SCANS[0]}/model.obj"
    assert written["object_ids"] == [source_id(scan)] and written["views"] == 3
    assert {s["source"] for s in written["skipped"]} == set(reasons)
    for skip in written["skipped"]:
        assert reasons[skip["source"]] in skip["reason"]
    (record,) = read_shards(tmp_path / "out")
    assert record["source"] == scan and record["object_id"] == source_id(scan) >= 2**62
    assert record["rgba"].shape == (3, 16, 16, 4) and (record["rgba"][..., 3] > 0).any()
    # The same cameras as a Zeroverse object of that id would get, from the same seed.
    from zv_ray.data.records import object_cameras

    np.testing.assert_array_equal(record["c2w"], object_cameras(cfg.seed, record["object_id"], cfg.render)[1])


def test_ids_are_stable_and_name_the_source():
    assert source_id("mesh:a/model.obj") == source_id("mesh:a/model.obj") != source_id("mesh:b/model.obj")
    assert source_id("mesh:a/model.obj") != source_id("rendered:a/model.obj")
    assert all(2**62 <= source_id(f"mesh:{i}.glb") < 2**63 for i in range(100))


def test_nothing_rendered_fails_after_listing_the_skips(tmp_path):
    skipped = [{"source": "mesh:b.obj", "reason": "b"}, {"source": "mesh:a.obj", "reason": "a"}]
    summary = {"objects": 0, "views": 0, "bytes": 0, "shards": 0}
    with pytest.raises(NothingRendered, match=f"all 2 inputs were skipped.*{SKIPPED_FILE}"):
        _finish(load_config(None), str(tmp_path), summary, 0.0, {"meshes": "x"}, skipped)
    assert json.loads((tmp_path / SKIPPED_FILE).read_text()) == sorted(skipped, key=lambda s: s["source"])


def test_zeroverse_rows_say_so_and_version_1_shards_still_read(tmp_path):
    from zv_ray.render.renderer import Renderer

    cfg = load_config(None, ["render.num_views=2", "render.resolution=16", "zeroverse.mesh_resolution=8",
                             "zeroverse.texture.resolution=16"])
    with Renderer.from_config(cfg.render) as renderer:
        record = render_object(cfg.seed, 5, cfg, renderer)
    assert record["source"] == ZEROVERSE_SOURCE
    table = records_to_table([record], "png")
    assert table["source"].to_pylist() == [ZEROVERSE_SOURCE]
    written = _write_batch(table, str(tmp_path / "new")).to_pylist()[0]  # the writer takes it without a SKIPPED column
    assert written["object_ids"] == [5] and written["skipped"] == []
    # A dataset written before `source` existed: schema version 1, no such column.
    old = table.drop_columns(["source"]).cast(SCHEMA_V1)
    pq.write_table(old, tmp_path / "shard-000000000005.parquet")
    assert valid_shards(tmp_path) == [str(tmp_path / "shard-000000000005.parquet")]
    (back,) = read_shards(tmp_path)
    assert back["source"] == ZEROVERSE_SOURCE and back["object_id"] == 5
    np.testing.assert_array_equal(back["rgba"], record["rgba"])
    train = load_config(None, ["render.num_views=2", "train.num_input_views=1", "train.num_target_views=1",
                               "train.resolution=8", "model.patch_size=4"])  # stored at 16 px, trained at 8
    actor = SampleActor(train.model_dump(mode="json"), [{"kind": "parquet", "shards": [[valid_shards(tmp_path)[0], 1]]}])
    samples = actor({k: np.array([v]) for k, v in {"unit": 7, "source": 0, "index": 0, "view_pass": 0}.items()})
    assert samples["rgb"].shape[1:] == (2, 8, 8, 3) and (samples["object_id"] == 5).all() and (samples["unit"] == 7).all()
    with pytest.raises(ValueError, match="missing.*source"):
        write_shard(old, tmp_path)  # new shards are always version 2


def test_layout_round_trip_without_ray(tmp_path):
    """write_object_folder then read_object_folder: the same cameras, alpha exactly, RGB within one level
    (the official files store straight alpha, composited on white again when read)."""
    rng = np.random.default_rng(0)
    views, size = 3, 12
    color = rng.integers(0, 256, (views, size, size, 3))
    alpha = rng.choice([0, 64, 128, 191, 255], (views, size, size, 1))
    rgb = np.round(color * alpha / 255 + 255 * (1 - alpha / 255)).astype(np.uint8)
    intrinsics, c2w = sample_cameras(rng, load_config(None, [f"render.num_views={views}", f"render.resolution={size}"]).render)
    record = {"object_id": 7, "source": "zeroverse", "rgba": np.concatenate([rgb, alpha.astype(np.uint8)], -1),
              "intrinsics": intrinsics, "c2w": c2w}
    write_object_folder(record, str(tmp_path / "000000000007"))
    cameras = json.loads((tmp_path / "000000000007" / CAMERAS_FILE).read_text())
    assert set(cameras["frames"][0]) == {"w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path"}
    folders, skipped = find_object_folders(str(tmp_path))
    assert folders == [str(tmp_path / "000000000007")] and skipped == []
    back = read_object_folder(str(tmp_path), folders[0], seed=0)
    assert back["source"] == "rendered:000000000007" and back["object_id"] == source_id("rendered:000000000007")
    np.testing.assert_array_equal(back["rgba"][..., 3], record["rgba"][..., 3])
    assert np.abs(back["rgba"][..., :3].astype(int) - rgb).max() <= 1
    np.testing.assert_allclose(back["intrinsics"], intrinsics, rtol=1e-6)
    np.testing.assert_allclose(back["c2w"], c2w, atol=1e-5)


@pytest.mark.parametrize("frame,field", [
    ({"w2c": [[1, 0, 0, 0]]}, "frames[1].w2c: expected a finite 4x4 matrix"),
    ({"fx": "wide"}, "frames[1].fx: expected a finite number"),
    ({"file_path": None}, "frames[1].file_path: missing"),
])
def test_a_malformed_cameras_file_is_one_line_before_ray(tmp_path, monkeypatch, capsys, frame, field):
    good = {"w": 8, "h": 8, "fx": 9.0, "fy": 9.0, "cx": 4.0, "cy": 4.0, "w2c": np.eye(4).tolist(), "file_path": "images/000.png"}
    for name, frames in (("a", [good, good]), ("b", [good, {**good, **frame}])):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / CAMERAS_FILE).write_text(json.dumps({"frames": frames}))
    (tmp_path / "in" / "previews").mkdir()  # no cameras file: skipped, not fatal
    with pytest.raises(CameraFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
        find_object_folders(str(tmp_path / "in"))
    err = one_line_error(monkeypatch, capsys, "dataset", "--rendered", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert f"error: {tmp_path / 'in' / 'b' / CAMERAS_FILE}: {field}" in err


@needs_scans
def test_meshes_load_from_s3_like_from_a_folder(s3_env, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    for path in (TRAIN_GSO / SCANS[1]).iterdir():
        s3.upload_file(str(path), "zv-test", f"meshes/{SCANS[1]}/{path.name}")
    root = "s3://zv-test/meshes"
    files, (folder,) = mesh_entries(root)
    (mesh,) = meshes_under(folder)
    assert files == []
    assert mesh == f"{root}/{SCANS[1]}/model.obj"
    remote = load_textured(mesh, 1.8)  # the .mtl and texture come from beside it in the bucket
    local = load_textured(str(TRAIN_GSO / SCANS[1] / "model.obj"), 1.8)
    np.testing.assert_allclose(remote.bounds, local.bounds)


@needs_scans
@pytest.mark.timeout(420)
def test_meshes_export_and_import_through_the_cli(tmp_path):
    """`zv-ray dataset --meshes` over two scans and three unusable meshes, `zv-ray export`, then `zv-ray dataset
    --rendered` of the export: the same pixels and cameras come back."""
    import ray

    from zv_ray.cli import app

    root = with_scans(tmp_path / "meshes", SCANS)
    reasons = broken_meshes(root)
    runner = CliRunner()
    config = ["--config", str(REPO / "configs" / "tiny.yaml")]
    try:
        result = runner.invoke(app, ["dataset", "--meshes", str(root), "--out", str(tmp_path / "ds"), *config, *TINY])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "done 2 objects, 8 views" in text and "3 skipped (skipped.json)" in text
        for source in reasons:
            assert f"skipped {source}: " in text
        skipped = json.loads((tmp_path / "ds" / SKIPPED_FILE).read_text())
        assert [s["source"] for s in skipped] == sorted(reasons)
        assert all(reasons[s["source"]] in s["reason"] for s in skipped)
        assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["summary"]["skipped"] == 3
        assert (tmp_path / "ds" / "contact_sheet.png").is_file()
        rendered = {r["source"]: r for r in read_shards(tmp_path / "ds")}
        assert sorted(rendered) == [f"mesh:{name}/model.obj" for name in SCANS]
        assert all(r["object_id"] == source_id(s) and r["rgba"].shape == (4, 32, 32, 4) for s, r in rendered.items())

        result = runner.invoke(app, ["export", str(tmp_path / "ds"), "--out", str(tmp_path / "official")])
        assert result.exit_code == 0, result.output
        back_args = ["dataset", "--rendered", str(tmp_path / "official"), "--out", str(tmp_path / "back"), *config]
        result = runner.invoke(app, back_args)
        assert result.exit_code == 0, result.output
        assert "done 2 objects, 8 views" in " ".join(result.output.split())
    finally:
        ray.shutdown()
    by_id = {r["object_id"]: r for r in rendered.values()}
    back = list(read_shards(tmp_path / "back"))
    assert len(back) == 2
    for record in back:
        original = by_id[int(record["source"].removeprefix("rendered:"))]  # folders are named by object id
        np.testing.assert_array_equal(record["rgba"][..., 3], original["rgba"][..., 3])
        assert np.abs(record["rgba"][..., :3].astype(int) - original["rgba"][..., :3]).max() <= 1
        np.testing.assert_allclose(record["intrinsics"], original["intrinsics"], rtol=1e-6)
        np.testing.assert_allclose(record["c2w"], original["c2w"], atol=1e-5)
