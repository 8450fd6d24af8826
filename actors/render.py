"""Generate + render Zeroverse objects, or render real meshes, into dataset records inside Ray Data `map_batches`
(one GL context per actor).

Failure drill: `touch /tmp/arm && ZV_RAY_RENDER_FAULT_ARMED=/tmp/arm zv-ray dataset --n 8 --out DIR`;
the first actor call that finds the file deletes it and kills its process, so Ray must restart the
actor and retry its batch (the same ids reproduce the same objects).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from zv_ray.config import RunConfig
from zv_ray.data.meshes import UnusableMesh, load_textured
from zv_ray.data.schema import records_to_table
from zv_ray.data.records import render_mesh, render_object, skipped_record
from zv_ray.render.renderer import Renderer

FAULT_ENV = "ZV_RAY_RENDER_FAULT_ARMED"


def fault_drill() -> None:
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:
        os.unlink(marker)  # exactly one process wins the arming
    except FileNotFoundError:
        return
    os._exit(17)  # a hard crash (no exception, no cleanup), like an OOM kill


class ZeroverseRenderActor:
    """Batch {"id": [B] int64 offsets} -> objects first_id + offset as a pyarrow table in the dataset schema, every
    render.num_views view at render.resolution (encoded per data.image_format)."""

    def __init__(self, config: dict[str, Any], first_id: int) -> None:
        self.cfg = RunConfig.model_validate(config)
        self.first_id = first_id
        self.renderer = Renderer.from_config(self.cfg.render)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        fault_drill()
        records = []
        for offset in batch["id"]:
            object_id = self.first_id + int(offset)
            try:
                records.append(render_object(self.cfg.seed, object_id, self.cfg, self.renderer))
            except Exception as err:
                raise RuntimeError(
                    f"object {object_id} (seed {self.cfg.seed}) failed to generate or render: {err}"
                ) from err
        return records_to_table(records, self.cfg.data.image_format, self.cfg.data.png_compress_level)


class MeshRenderActor:
    """Batch {"path": [B] mesh files, "source": [B] their source names} -> a pyarrow table in the dataset schema,
    every render.num_views view at render.resolution, plus the SKIPPED column: why a mesh that cannot be loaded,
    is empty or has no texture was skipped (the run goes on); a failure to render a loaded mesh fails the run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = RunConfig.model_validate(config)
        self.renderer = Renderer.from_config(self.cfg.render)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        fault_drill()
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
