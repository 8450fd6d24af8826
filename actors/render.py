"""Generate + render Zeroverse objects inside Ray Data `map_batches` (one GL context per actor).

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
from zv_ray.data.schema import records_to_table
from zv_ray.render.objects import render_object
from zv_ray.render.renderer import Renderer

FAULT_ENV = "ZV_RAY_RENDER_FAULT_ARMED"
# Numeric tensor columns of the online stream, as Ray Train's iter_torch_batches consumes them.
TENSOR_COLUMNS = ("object_id", "rgba", "intrinsics", "c2w")


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
    """Batch {"id": [B] int64, offsets from first_id} -> rendered objects.

    output="tensors": {object_id [B], rgba [B, V, H, W, 4] uint8, intrinsics [B, V, 4], c2w [B, V, 4, 4]};
    output="record": a pyarrow table in the dataset schema (views encoded per data.image_format)."""

    def __init__(self, config: dict[str, Any], first_id: int, output: Literal["tensors", "record"] = "tensors") -> None:
        self.cfg = RunConfig.model_validate(config)
        self.first_id = first_id
        self.output = output
        self.renderer = Renderer.from_config(self.cfg.render)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray] | pa.Table:
        _fault_drill()
        records = []
        for offset in batch["id"]:
            object_id = self.first_id + int(offset)
            try:
                records.append(render_object(self.cfg.seed, object_id, self.cfg, self.renderer))
            except Exception as err:
                raise RuntimeError(
                    f"object {object_id} (seed {self.cfg.seed}) failed to generate or render: {err}"
                ) from err
        if self.output == "record":
            return records_to_table(records, self.cfg.data.image_format, self.cfg.data.png_compress_level)
        return {k: np.stack([r[k] for r in records]) for k in TENSOR_COLUMNS}
