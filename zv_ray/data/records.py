"""One object id -> its posed views: a full multi-view record (datasets), or training samples (the stream).

Zeroverse objects are ids 0, 1, ... of the generator. A real object (a mesh, an imported render folder) gets the id
`source_id(source)`: 2^62 plus 62 bits of the SHA-256 of its source name ("mesh:<path relative to --meshes>"), so
it is stable however the folder is listed or split and whatever else it holds, and never a Zeroverse id.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import trimesh

from zv_ray.config import RenderConfig, RunConfig
from zv_ray.data.schema import ZEROVERSE_SOURCE
from zv_ray.render.cameras import cameras_for
from zv_ray.render.exposure import normalize_exposure
from zv_ray.render.renderer import Renderer
from zv_ray.zeroverse import generate_object
from zv_ray.zeroverse.rng import stage_rng

# An object's cameras draw from their own stage stream, independent of every generator stage; the views
# each training sample takes from them draw from another.
CAMERA_STAGE = "cameras"
VIEWS_STAGE = "views"
# A training sample's columns, as Ray Train's iter_torch_batches consumes them (online and Parquet streams alike).
SAMPLE_COLUMNS = ("object_id", "rgb", "intrinsics", "c2w")
MESH_SOURCE, RENDERED_SOURCE = "mesh:", "rendered:"
# Real objects' ids start here; Zeroverse ids (validation ones included) stay far below.
_REAL_ID_BASE = 2**62


def source_id(source: str) -> int:
    """The stable id of a real object named `source` (see the module docstring)."""
    return _REAL_ID_BASE + int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big") % _REAL_ID_BASE


def source_name(kind: str, root: str, path: str) -> str:
    """A real object's source: its kind (MESH_SOURCE, RENDERED_SOURCE) and its path relative to the input folder."""
    return kind + path[len(root.rstrip("/")) + 1:]


def pixels_config_hash(cfg: RunConfig, generated: bool = True) -> str:
    """Short hash of the settings that decide an object's pixels: render config, and the generator config
    (`generated`) or, for a real mesh, the extent it is normalized to."""
    shape = cfg.zeroverse.model_dump(mode="json") if generated else {"normalized_extent": cfg.zeroverse.normalized_extent}
    blob = json.dumps({"zeroverse": shape, "render": cfg.render.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def object_cameras(seed: int, object_id: int, cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """The object's camera pool: intrinsics [V, 4] at cfg.resolution, c2w [V, 4, 4] (OpenCV), V = cfg.num_views."""
    return cameras_for(stage_rng(seed, object_id, CAMERA_STAGE), cfg)


def render_object(seed: int, object_id: int, cfg: RunConfig, renderer: Renderer) -> dict[str, Any]:
    """Pure in (seed, object_id, cfg): the same id gives the same object, cameras and pixels.

    Returns object_id, source ("zeroverse"), seed, config_hash, params_json, rgba [V, H, W, 4] uint8 (RGB on
    white + alpha), intrinsics [V, 4] float32, c2w [V, 4, 4] float32 (OpenCV camera-to-world)."""
    obj = generate_object(seed, object_id, cfg.zeroverse)
    return _render_record(seed, object_id, obj.scene, cfg, renderer) | {
        "source": ZEROVERSE_SOURCE, "config_hash": pixels_config_hash(cfg), "params_json": json.dumps(obj.params, sort_keys=True),
    }


def render_mesh(seed: int, source: str, scene: trimesh.Scene, cfg: RunConfig, renderer: Renderer) -> dict[str, Any]:
    """render_object for a real mesh, already normalized (zv_ray.data.meshes.load_textured): the same cameras
    and rendering as a Zeroverse object of its id (source_id(source))."""
    object_id = source_id(source)
    return _render_record(seed, object_id, scene, cfg, renderer) | {
        "source": source, "config_hash": pixels_config_hash(cfg, generated=False),
        "params_json": json.dumps({"faces": sum(len(g.faces) for g in scene.geometry.values())}),
    }


def skipped_record(seed: int, source: str) -> dict[str, Any]:
    """The record of an input that could not be used: no views (it travels to the shard writer, which drops it)."""
    return {"object_id": np.int64(source_id(source)), "source": source, "seed": np.int64(seed), "config_hash": "",
            "params_json": "{}", "rgba": np.zeros((0, 0, 0, 4), np.uint8), "intrinsics": np.zeros((0, 4), np.float32),
            "c2w": np.zeros((0, 4, 4), np.float32)}


def _render_record(seed: int, object_id: int, scene: trimesh.Scene, cfg: RunConfig, renderer: Renderer) -> dict[str, Any]:
    """Every camera of the object's pool at render.resolution: object_id, seed, rgba, intrinsics, c2w."""
    if renderer.resolution != cfg.render.resolution:
        raise ValueError(f"renderer is {renderer.resolution} px but render.resolution is {cfg.render.resolution}")
    intrinsics, c2w = object_cameras(seed, object_id, cfg.render)
    views = renderer.render(scene, intrinsics, c2w)
    rgb = normalize_exposure(views.rgb, views.alpha) if cfg.render.exposure_normalize else views.rgb
    return {
        "object_id": np.int64(object_id),
        "seed": np.int64(seed),
        "rgba": np.concatenate([rgb, views.alpha[..., None]], axis=-1),
        "intrinsics": intrinsics,
        "c2w": c2w,
    }


def sample_picks(cfg: RunConfig, object_id: int, view_pass: int, c2w: np.ndarray) -> np.ndarray:  # [k, V]
    """The views of each of the object's data.samples_per_object training samples in view pass `view_pass`, by
    the trainer's rule (train.num_input_views, num_target_views, input_views, target_views: inputs first) over
    its camera pool c2w [Vall, 4, 4]. Pure in (seed, id, pass, cameras): the one place training views are
    chosen, for objects rendered online and objects read from Parquet alike."""
    import torch

    from zv_ray.inference.views import pick_training_views

    seed = int(stage_rng(cfg.seed, object_id, f"{VIEWS_STAGE}/{view_pass}").integers(2**62))
    pool = torch.from_numpy(np.asarray(c2w)).expand(cfg.data.samples_per_object, *c2w.shape)  # [k, Vall, 4, 4]
    return pick_training_views(pool, cfg.train, torch.Generator().manual_seed(seed)).numpy()


def _samples(object_id: int, rgb: np.ndarray, intrinsics: np.ndarray, c2w: np.ndarray,
             where: np.ndarray) -> dict[str, np.ndarray]:
    """Samples [k] of views where [k, V] indexes into rgb [N, H, W, 3], intrinsics [N, 4], c2w [N, 4, 4]."""
    return {
        "object_id": np.full(len(where), object_id, dtype=np.int64),
        "rgb": rgb[where],
        "intrinsics": intrinsics[where].astype(np.float32),
        "c2w": c2w[where].astype(np.float32),
    }


def render_samples(seed: int, object_id: int, cfg: RunConfig, renderer: Renderer, view_pass: int) -> dict[str, np.ndarray]:
    """The object's k training samples of view pass `view_pass` (sample_picks), every picked view rendered once,
    at renderer.resolution; the cameras are drawn once for both.

    Returns object_id [k] int64, rgb [k, V, H, W, 3] uint8 on white, intrinsics [k, V, 4] float32 at
    renderer.resolution, c2w [k, V, 4, 4] float32. Pure in (seed, object_id, cfg, view_pass, resolution)."""
    obj = generate_object(seed, object_id, cfg.zeroverse)
    intrinsics, c2w = object_cameras(seed, object_id, cfg.render)
    picks = sample_picks(cfg, object_id, view_pass, c2w)
    needed, where = np.unique(picks, return_inverse=True)  # render each view once, however many samples share it
    # Pixel coordinates scale with the image side (centres at +0.5 at any size).
    intrinsics = intrinsics[needed] * (renderer.resolution / cfg.render.resolution)
    views = renderer.render(obj.scene, intrinsics, c2w[needed])
    rgb = normalize_exposure(views.rgb, views.alpha) if cfg.render.exposure_normalize else views.rgb
    return _samples(object_id, rgb, intrinsics, c2w[needed], where.reshape(picks.shape))


def stored_samples(record: dict[str, Any], cfg: RunConfig, view_pass: int) -> dict[str, np.ndarray]:
    """render_samples for an object read back from a dataset, at its stored resolution: the same views of the
    same cameras for the same (seed, id, pass)."""
    picks = sample_picks(cfg, int(record["object_id"]), view_pass, record["c2w"])
    return _samples(int(record["object_id"]), record["rgba"][..., :3], record["intrinsics"], record["c2w"], picks)


def resized_samples(samples: dict[str, np.ndarray], resolution: int) -> dict[str, np.ndarray]:
    """Samples (rgb [k, V, H, W, 3] uint8) at `resolution` px, area-averaged like make_view_batch, intrinsics scaled:
    samples of a dataset rendered at another size stack with the rest of the batch."""
    rgb = samples["rgb"]
    k, V, H, W, _ = rgb.shape
    if (H, W) == (resolution, resolution):
        return samples
    import torch
    import torch.nn.functional as F

    views = torch.from_numpy(rgb).flatten(0, 1).permute(0, 3, 1, 2).float()
    small = F.interpolate(views, size=(resolution, resolution), mode="area").round().clamp(0, 255).to(torch.uint8)
    scale = np.array([resolution / W, resolution / H, resolution / W, resolution / H], np.float32)
    return samples | {"rgb": small.permute(0, 2, 3, 1).reshape(k, V, resolution, resolution, 3).numpy(),
                      "intrinsics": samples["intrinsics"] * scale}
