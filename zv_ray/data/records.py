"""One object id -> its posed views: a full multi-view record (datasets), or training samples (the stream)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from zv_ray.config import RenderConfig, RunConfig
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


def pixels_config_hash(cfg: RunConfig) -> str:
    """Short hash of the settings that decide an object's pixels: generator and render configs."""
    settings = {"zeroverse": cfg.zeroverse.model_dump(mode="json"), "render": cfg.render.model_dump(mode="json")}
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def object_cameras(seed: int, object_id: int, cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """The object's camera pool: intrinsics [V, 4] at cfg.resolution, c2w [V, 4, 4] (OpenCV), V = cfg.num_views."""
    return cameras_for(stage_rng(seed, object_id, CAMERA_STAGE), cfg)


def render_object(seed: int, object_id: int, cfg: RunConfig, renderer: Renderer) -> dict[str, Any]:
    """Pure in (seed, object_id, cfg): the same id gives the same object, cameras and pixels.

    Returns object_id, seed, config_hash, params_json, rgba [V, H, W, 4] uint8 (RGB on white + alpha),
    intrinsics [V, 4] float32, c2w [V, 4, 4] float32 (OpenCV camera-to-world)."""
    if renderer.resolution != cfg.render.resolution:
        raise ValueError(f"renderer is {renderer.resolution} px but render.resolution is {cfg.render.resolution}")
    obj = generate_object(seed, object_id, cfg.zeroverse)
    intrinsics, c2w = object_cameras(seed, object_id, cfg.render)
    views = renderer.render(obj.scene, intrinsics, c2w)
    rgb = normalize_exposure(views.rgb, views.alpha) if cfg.render.exposure_normalize else views.rgb
    return {
        "object_id": np.int64(object_id),
        "seed": np.int64(seed),
        "config_hash": pixels_config_hash(cfg),
        "params_json": json.dumps(obj.params, sort_keys=True),
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
