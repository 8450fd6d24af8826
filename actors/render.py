"""Generate + render Zeroverse objects, or render real meshes, inside Ray Data `map_batches` (one GL context per actor).

Failure drill: `touch /tmp/arm && ZV_RAY_RENDER_FAULT_ARMED=/tmp/arm zv-ray dataset --n 8 --out DIR`;
the first actor call that finds the file deletes it and kills its process, so Ray must restart the
actor and retry its batch (the same ids reproduce the same objects).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from zv_ray.config import RunConfig
from zv_ray.data.meshes import UnusableMesh, load_textured
from zv_ray.data.schema import records_to_table
from zv_ray.data.records import SAMPLE_COLUMNS, render_mesh, render_object, render_samples, skipped_record
from zv_ray.render.renderer import Renderer

FAULT_ENV = "ZV_RAY_RENDER_FAULT_ARMED"


def _fault_drill() -> None:
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:
        os.unlink(marker)  # exactly one process wins the arming
    except FileNotFoundError:
        return
    os._exit(17)  # a hard crash (no exception, no cleanup), like an OOM kill


class ZeroverseRenderActor:
    """Batch {"id": [B] int64, offsets o from first_id} -> rendered objects first_id + o % count (view pass o // count).

    output="samples" (the training stream): data.samples_per_object samples per object, each picking
    train.num_input_views + num_target_views of its render.num_views cameras (inputs first, the
    train.target_views rule), rendered at train.resolution: {object_id [N], rgb [N, V, H, W, 3] uint8,
    intrinsics [N, V, 4], c2w [N, V, 4, 4]} with N = B x samples_per_object.
    output="record": a pyarrow table in the dataset schema, every view at render.resolution (views
    encoded per data.image_format)."""

    def __init__(
        self, config: dict[str, Any], first_id: int, output: Literal["samples", "record"] = "samples", count: int | None = None
    ) -> None:
        self.cfg = RunConfig.model_validate(config)
        self.first_id = first_id
        self.count = count  # ids per pass; None: offsets are ids (one pass)
        self.output = output
        resolution = self.cfg.train.resolution if output == "samples" else None
        self.renderer = Renderer.from_config(self.cfg.render, resolution)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray] | pa.Table:
        _fault_drill()
        records = []
        for offset in batch["id"]:
            view_pass, index = divmod(int(offset), self.count) if self.count else (0, int(offset))
            object_id = self.first_id + index
            try:
                if self.output == "record":
                    records.append(render_object(self.cfg.seed, object_id, self.cfg, self.renderer))
                else:
                    records.append(render_samples(self.cfg.seed, object_id, self.cfg, self.renderer, view_pass))
            except Exception as err:
                raise RuntimeError(
                    f"object {object_id} (seed {self.cfg.seed}) failed to generate or render: {err}"
                ) from err
        if self.output == "record":
            return records_to_table(records, self.cfg.data.image_format, self.cfg.data.png_compress_level)
        return {k: np.concatenate([r[k] for r in records]) for k in SAMPLE_COLUMNS}


class MeshRenderActor:
    """Batch {"path": [B] mesh files, "source": [B] their source names} -> a pyarrow table in the dataset schema,
    every render.num_views view at render.resolution, plus the SKIPPED column: why a mesh that cannot be loaded,
    is empty or has no texture was skipped (the run goes on); a failure to render a loaded mesh fails the run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = RunConfig.model_validate(config)
        self.renderer = Renderer.from_config(self.cfg.render)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        _fault_drill()
        records, skipped = [], []
        for path, source in zip(batch["path"], batch["source"]):
            try:
                scene = load_textured(str(path), self.cfg.zeroverse.normalized_extent)
            except UnusableMesh as err:
                records.append(skipped_record(self.cfg.seed, str(source)))
                skipped.append(str(err))
                continue
            try:
                records.append(render_mesh(self.cfg.seed, str(source), scene, self.cfg, self.renderer))
            except Exception as err:
                raise RuntimeError(f"mesh {path} loaded but failed to render: {err}") from err
            skipped.append(None)
        return records_to_table(records, self.cfg.data.image_format, self.cfg.data.png_compress_level, skipped)
