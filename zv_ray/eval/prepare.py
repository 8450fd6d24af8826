"""Render evaluation objects once under the protocol: real meshes from a folder, or held-out Zeroverse ids.

Views are rendered exactly like training data (same renderer, resolution, shading and exposure
settings of the checkpoint's config) and resized to the model's resolution by the training code's
own make_view_batch, so evaluation sees what training saw, only from other objects and cameras.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trimesh

from zv_ray.config import RunConfig
from zv_ray.data.meshes import UpAxis, load_object
from zv_ray.eval.gso import find_objects, object_name
from zv_ray.eval.protocol import EvalProtocol, protocol_cameras
from zv_ray.render.exposure import normalize_exposure
from zv_ray.render.renderer import Renderer
from zv_ray.inference.views import PosedViews, object_views


@dataclass
class EvalObject:
    name: str
    views: PosedViews  # B = 1 at the model's resolution: inputs, then test views


@contextmanager
def _renderer_for(cfg: RunConfig, renderer: Renderer | None) -> Iterator[Renderer]:
    """The caller's renderer, or one for the config's render settings that is closed afterwards."""
    if renderer is not None:
        yield renderer
        return
    own = Renderer.from_config(cfg.render)
    try:
        yield own
    finally:
        own.close()


def render_eval_object(
    name: str, scene: trimesh.Scene, protocol: EvalProtocol, cfg: RunConfig, renderer: Renderer
) -> EvalObject:
    """Render a normalized scene at the protocol's cameras (inputs first) like a training object."""
    intrinsics, c2w = protocol_cameras(protocol, renderer.resolution)
    views = renderer.render(scene, intrinsics, c2w)
    rgb = normalize_exposure(views.rgb, views.alpha) if cfg.render.exposure_normalize else views.rgb
    return EvalObject(name, object_views(rgb, intrinsics, c2w, protocol.num_inputs, cfg.train.resolution))


def iter_real_objects(
    objects_dir: str | Path,
    cfg: RunConfig,
    protocol: EvalProtocol,
    *,
    max_objects: int | None = None,
    up: UpAxis = "auto",
    renderer: Renderer | None = None,
) -> Iterator[EvalObject]:
    """Real meshes from `objects_dir` (sorted by name, the first `max_objects`), one at a time."""
    paths = find_objects(objects_dir)[:max_objects]
    with _renderer_for(cfg, renderer) as r:
        for path in paths:
            scene = load_object(path, cfg.zeroverse.normalized_extent, up)
            yield render_eval_object(object_name(path), scene, protocol, cfg, r)


# The held-out Zeroverse objects' generator seed, whatever the run's: a sweep's seeds (`seeds: N`) change the
# training objects and weights, never the objects every arm and seed is scored on.
VAL_SEED = 0


def iter_zeroverse_objects(
    cfg: RunConfig, count: int, protocol: EvalProtocol, *, renderer: Renderer | None = None
) -> Iterator[EvalObject]:
    """`count` held-out Zeroverse objects: ids from data.val_first_object_id (disjoint from training), generated
    with the fixed data.val_zeroverse settings and VAL_SEED, not the training settings or seed a sweep varies."""
    from zv_ray.zeroverse import generate_object

    first = cfg.data.val_first_object_id
    with _renderer_for(cfg, renderer) as r:
        for object_id in range(first, first + count):
            obj = generate_object(VAL_SEED, object_id, cfg.data.val_zeroverse)
            yield render_eval_object(f"zeroverse_{object_id}", obj.scene, protocol, cfg, r)


def prepare_eval_views(
    objects_dir: str | Path,
    cfg: RunConfig,
    max_objects: int | None = None,
    num_test_views: int | None = None,
) -> list[EvalObject]:
    """Render a fixed real-object subset once, for evaluation every K steps during training."""
    protocol = EvalProtocol.for_config(cfg, num_test_views=num_test_views)
    return list(iter_real_objects(objects_dir, cfg, protocol, max_objects=max_objects))
