"""Zeroverse generator: determinism, geometry invariants, each augmentation's effect, config errors, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml
from PIL import Image
from conftest import REPO

from zv_ray.config import ConfigError, ZeroverseConfig, load_config
from zv_ray.config.zeroverse import ALL_PRIMITIVES, TextureConfig
from zv_ray.zeroverse import ZeroverseObject, generate_object
from zv_ray.zeroverse import boolean, heightfield, materials, primitives, textures, wireframe
from zv_ray.zeroverse.atlas import pack
from zv_ray.zeroverse.parts import displaced, sample_parts


def small(**overrides) -> ZeroverseConfig:
    """A fast config: coarse meshes and textures; overrides are ZeroverseConfig fields."""
    return ZeroverseConfig(**{"mesh_resolution": 8, "texture": TextureConfig(resolution=32)} | overrides)


def welded(vertices: np.ndarray, faces: np.ndarray, weld: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(vertices, weld[faces], process=False)


def glb_digest(obj: ZeroverseObject) -> str:
    return hashlib.sha256(obj.to_glb()).hexdigest()


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("kind", ALL_PRIMITIVES)
@pytest.mark.parametrize("n", [4, 9])
def test_primitives_are_closed_and_outward(kind: str, n: int) -> None:
    s = primitives.build(kind, n)
    mesh = welded(s.points, s.faces, s.weld)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward-facing triangles
    assert np.abs(s.points).max() <= 1.0 and set(np.unique(s.face_slot)) == set(range(s.num_slots))
    assert s.uv.min() >= 0.0 and s.uv.max() <= 1.0


@pytest.mark.parametrize("kind", ["cube", "cylinder", "cone"])
def test_heightfield_moves_only_face_interiors(kind: str) -> None:
    s = primitives.build(kind, 12)
    semi = np.array([0.5, 1.0, 1.5])
    rng = np.random.default_rng(0)
    fields = [{"grid": heightfield.sample_grid(rng, 0.2).tolist()} for _ in range(s.num_slots)]
    moved = displaced(s, semi, fields)
    rest = s.points * semi
    on_border = np.isin(s.uv, [0.0, 1.0]).any(axis=1) | (s.fade == 0.0)  # patch edges and cap rims
    assert np.array_equal(moved[on_border], rest[on_border])
    delta = np.linalg.norm(moved - rest, axis=1)
    assert (delta[~on_border] > 1e-6).mean() > 0.5
    assert welded(moved, s.faces, s.weld).is_watertight  # faces stay attached


def test_heightfield_is_zero_on_its_border() -> None:
    field = heightfield.upsample(np.full((heightfield.GRID, heightfield.GRID), 0.3))
    t = np.linspace(0.0, 1.0, 7)
    border = np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.ones_like(t), t], 1)])
    assert np.all(heightfield.sample(field, border) == 0.0)
    assert heightfield.sample(field, np.array([[0.5, 0.5]]))[0] > 0.2


def test_part_count_follows_weights() -> None:
    counts = {len(sample_parts(np.random.default_rng(i), small(part_count_weights=[0, 0, 1]))) for i in range(20)}
    assert counts == {3}
    counts = [len(sample_parts(np.random.default_rng(i), small())) for i in range(300)]
    assert min(counts) == 1 and max(counts) <= 9 and len(set(counts)) >= 7


def test_seam_jitter_moves_boundaries_within_ratio() -> None:
    sizes = np.array([100, 40, 200, 60])
    assert np.array_equal(materials.jitter_starts(np.random.default_rng(0), sizes, 0.0), [0, 100, 140, 340])
    for seed in range(20):
        starts = materials.jitter_starts(np.random.default_rng(seed), sizes, 0.25)
        base = np.array([0, 100, 140, 340])
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        assert np.all(starts[1:] - base[1:] >= -(0.25 * sizes[:-1]).astype(int))
        assert np.all(starts[1:] - base[1:] <= (0.25 * sizes[1:]).astype(int))


@pytest.mark.parametrize("kind", textures.PATTERNS)
def test_every_texture_pattern_renders(kind: str) -> None:
    rng = np.random.default_rng(1)
    recipes = [textures.sample_recipe(rng) for _ in range(60)]
    recipe = next(r for r in recipes if r["layers"][0]["pattern"]["kind"] == kind)
    img = textures.render_recipe(recipe, 48)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert np.array_equal(img, textures.render_recipe(json.loads(json.dumps(recipe)), 48))  # recipe alone suffices
    assert img.std() > 1.0  # not a flat colour


def test_folder_textures(tmp_path: Path) -> None:
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (64, 40), colour).save(tmp_path / f"t{i}.png")
    cfg = small(texture=TextureConfig(source="folder", folder=str(tmp_path), resolution=16))
    obj = generate_object(0, 1, cfg)
    assert all("image" in r for r in obj.params["materials"]["recipes"])
    atlas = np.asarray(obj.scene.geometry["body"].visual.material.baseColorTexture)
    assert set(map(tuple, atlas.reshape(-1, atlas.shape[-1])[:, :3])) <= {(255, 0, 0), (0, 0, 255), (0, 0, 0)}


def test_catmull_clark_rounds_a_cube_and_simple_keeps_it() -> None:
    v, loops = wireframe.polygons("cube")
    sv, sq = wireframe.subdivide(v, loops, smooth=False)
    cv, cq = wireframe.subdivide(v, loops, smooth=True)
    assert len(sv) == len(cv) == 26 and len(sq) == len(cq) == 24
    assert np.isclose(np.abs(sv).max(axis=1), 1.0).all()  # simple: still on the cube
    # Catmull-Clark: corners (F + 2R) / 3 = 5/9, edge points (ends + face points) / 4, face points stay at centroids.
    assert np.allclose(np.abs(cv[:8]), 5.0 / 9.0) and np.allclose(np.abs(cv[8:20]).max(axis=1), 0.75)


# ---------------------------------------------------------------- objects


def test_same_id_is_byte_identical_in_another_process() -> None:
    cfg = small(p_boolean=1.0, p_wireframe=1.0)
    here = glb_digest(generate_object(11, 3, cfg))
    code = (
        "import hashlib, sys; from zv_ray.config import ZeroverseConfig; from zv_ray.zeroverse import generate_object;"
        "cfg = ZeroverseConfig.model_validate_json(sys.argv[1]);"
        "print(hashlib.sha256(generate_object(11, 3, cfg).to_glb()).hexdigest())"
    )
    there = subprocess.run(
        [sys.executable, "-c", code, cfg.model_dump_json()], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert there.returncode == 0, there.stderr
    assert there.stdout.strip() == here
    assert glb_digest(generate_object(11, 4, cfg)) != here
    assert glb_digest(generate_object(12, 3, cfg)) != here


def test_objects_stay_inside_the_box_and_params_are_json() -> None:
    cfg = small(p_boolean=1.0, p_wireframe=1.0, wire_primitives=["cylinder", "torus"])
    fits = 0
    for i in range(8):
        obj = generate_object(0, i, cfg)
        lo, hi = obj.scene.bounds
        assert lo.min() >= -0.9 - 1e-9 and hi.max() <= 0.9 + 1e-9
        assert obj.params["fit"].get("scale", 1.0) <= 1.0  # the fit recentres and shrinks, never enlarges
        assert set(obj.scene.geometry) == {"body", "wireframe"}
        fits += obj.params["fit"]["applied"]
        params = json.loads(json.dumps(obj.params))
        assert 1 <= len(params["parts"]) <= 9
        assert len(params["materials"]["recipes"]) == obj.stats["num_slots"]
    assert fits > 0  # the wireframe does stick out sometimes, and the fit brought it back


def test_glb_round_trip_keeps_textures() -> None:
    obj = generate_object(0, 2, small(p_wireframe=1.0))
    loaded = trimesh.load(io.BytesIO(obj.to_glb()), file_type="glb")
    assert len(loaded.geometry) == 2
    for geom in loaded.geometry.values():
        assert geom.visual.uv is not None and len(geom.visual.uv) == len(geom.vertices)
        assert geom.visual.material.baseColorTexture is not None


def test_boolean_cut_lowers_volume_and_textures_the_cavity() -> None:
    base = dict(primitives=["cube"], part_count_weights=[1], p_heightfield=0.0, cutter_primitives=["sphere"])
    for object_id in range(3):
        uncut = generate_object(1, object_id, small(**base)).scene.geometry["body"]
        obj = generate_object(1, object_id, small(**base, p_boolean=1.0))
        cut, params = obj.scene.geometry["body"], obj.params["boolean"]
        assert params["applied"] and not params["failed"]
        assert cut.volume < uncut.volume - 1e-3
        assert np.isclose(uncut.volume - cut.volume, params["volume_removed"], rtol=1e-6)
        assert len(cut.faces) > len(uncut.faces)
        # Cavity-wall faces (all corners on the cutter's surface) carry UVs inside the chosen slot's atlas tile.
        atlas = pack([np.zeros((32, 32, 3), np.uint8)] * obj.stats["num_slots"])
        knife = boolean.cutter_mesh(params, atlas)
        _, dist, _ = trimesh.proximity.closest_point(trimesh.Trimesh(knife.vertices, knife.faces), cut.vertices)
        wall = (dist[cut.faces] < 1e-7).all(axis=1)
        assert wall.sum() > 10
        h, w = atlas.image.shape[:2]
        uv = cut.visual.uv[cut.faces[wall]].reshape(-1, 2)
        ox, oy = atlas.origins[params["material_slot"]]
        x, y = uv[:, 0] * w - ox, (1 - uv[:, 1]) * h - oy
        assert x.min() >= 0 and y.min() >= 0 and x.max() <= 32 and y.max() <= 32


@pytest.mark.parametrize("cutter", ALL_PRIMITIVES)
def test_every_cutter_succeeds(cutter: str) -> None:
    cfg = small(p_boolean=1.0, cutter_primitives=[cutter], mesh_resolution=6)
    reports = [generate_object(2, i, cfg).params["boolean"] for i in range(3)]
    assert all(r["kind"] == cutter and not r["failed"] for r in reports), reports


def test_forced_boolean_failure_falls_back_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("forced failure")

    monkeypatch.setattr(boolean, "difference", broken)
    obj = generate_object(0, 5, small(p_boolean=1.0))
    assert obj.stats["boolean_failed"] == 1 and obj.params["boolean"]["failed"]
    assert "forced failure" in obj.params["boolean"]["reason"]
    uncut = generate_object(0, 5, small(p_boolean=0.0))
    assert np.array_equal(obj.scene.geometry["body"].vertices, uncut.scene.geometry["body"].vertices)


def _cutter(kind: str, size: float, center: list[float]):
    atlas = pack([np.zeros((8, 8, 3), np.uint8)])
    cut = {"kind": kind, "size": size, "rotation_deg": [0, 0, 0], "center": center, "material_slot": 0}
    return boolean.cutter_mesh(cut, atlas)


def test_degenerate_cut_falls_back() -> None:
    part = _cutter("cube", 0.1, [0, 0, 0])
    meshes, report = boolean.carve([part], _cutter("sphere", 0.1, [5, 5, 5]))
    assert report["failed"] and "nothing" in report["reason"] and meshes[0] is part
    meshes, report = boolean.carve([part], _cutter("cube", 1.0, [0, 0, 0]))
    assert report["failed"] and "everything" in report["reason"] and meshes[0] is part


@pytest.mark.parametrize("object_id", [5, 6])  # the wireframe fits the box as is / needs the object rescaled
def test_wireframe_adds_tubes_of_the_stated_radius(object_id: int) -> None:
    cfg = small(p_wireframe=1.0, wire_primitives=["cube"])
    obj = generate_object(0, object_id, cfg)
    plain = generate_object(0, object_id, small(p_wireframe=0.0))
    wire = obj.params["wireframe"]
    fit = obj.params["fit"]
    scale, center = (fit["scale"], np.asarray(fit["center"])) if fit["applied"] else (1.0, np.zeros(3))
    points, edges = wireframe.skeleton(wire)
    points = (points - center) * scale
    radius = wire["radius"] * scale
    # Blender's thickness is the full strut width: the tube radius is half of it.
    assert cfg.wire_thickness_range[0] <= wire["thickness"] <= cfg.wire_thickness_range[1]
    assert wire["radius"] == pytest.approx(wire["thickness"] / 2)
    tube = obj.scene.geometry["wireframe"]
    # Tubes are laid out edge by edge; every vertex lies exactly `radius` from its own edge (the segment
    # extended by the radius at both ends, so the caps close the joints).
    a, b = points[edges[:, 0]], points[edges[:, 1]]
    d = (b - a) / np.linalg.norm(b - a, axis=1, keepdims=True)
    a, b = (a - radius * d)[:, None], (b + radius * d)[:, None]  # [E, 1, 3]
    p = tube.vertices.reshape(len(edges), -1, 3)  # [E, 2 * (sides + 1), 3]
    t = np.clip(((p - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0.0, 1.0)
    assert np.allclose(np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1), radius, rtol=1e-6)
    # The body is untouched by the wireframe (only rescaled if the fit applied).
    body, plain_body = obj.scene.geometry["body"].vertices, plain.scene.geometry["body"].vertices
    assert np.allclose((plain_body - center) * scale if fit["applied"] else plain_body, body)


def test_stages_use_independent_streams() -> None:
    """Switching augmentations on does not change the parts or their textures."""
    a = generate_object(4, 9, small())
    b = generate_object(4, 9, small(p_boolean=1.0, p_wireframe=1.0))
    assert a.params["parts"] == b.params["parts"] and a.params["materials"] == b.params["materials"]


# ---------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("zeroverse.p_boolean=2", "zeroverse.p_boolean"),
        ("zeroverse.p_bool=0.5", "zeroverse.p_bool"),
        ("zeroverse.cutter_primitives=[pyramid]", "zeroverse.cutter_primitives"),
        ("zeroverse.wire_thickness_range=[0.03, 0.01]", "zeroverse.wire_thickness_range"),
        ("zeroverse.mesh_resolution=2", "zeroverse.mesh_resolution"),
        ("zeroverse.texture.source=folder", "zeroverse.texture"),
    ],
)
def test_bad_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_example_config_is_the_default() -> None:
    cfg = load_config(REPO / "configs" / "zeroverse_default.yaml")
    assert cfg.zeroverse == ZeroverseConfig() and cfg.seed == 0


def test_cli_writes_objects_params_and_contact_sheet(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zv_ray.cli import app

    config = tmp_path / "run.yaml"
    zeroverse = {"mesh_resolution": 6, "p_wireframe": 1.0, "texture": {"resolution": 32}}
    config.write_text(yaml.safe_dump({"seed": 3, "zeroverse": zeroverse}))
    out = tmp_path / "objects"
    result = CliRunner().invoke(app, ["generate", "--n", "2", "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    for name in ("000000", "000001"):
        params = json.loads((out / f"{name}.json").read_text())
        assert params["seed"] == 3 and params["config"]["mesh_resolution"] == 6
        expected = generate_object(3, params["object_id"], load_config(config).zeroverse).to_glb()
        assert (out / f"{name}.glb").read_bytes() == expected
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and (sheet < 250).any()  # something was drawn on the white sheet


def test_cli_reports_a_bad_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zv_ray.cli import app

    config = tmp_path / "bad.yaml"
    config.write_text("zeroverse:\n  p_wireframe: 3\n")
    result = CliRunner().invoke(app, ["generate", "--n", "1", "--out", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 2 and "zeroverse.p_wireframe" in result.output
