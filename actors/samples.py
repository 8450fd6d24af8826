"""Training units inside Ray Data `map_batches`: each row names one visit of one object (zv_ray.data.plan), and the
actor returns that object's data.samples_per_object samples, from whichever source it belongs to.

A Zeroverse unit is generated and rendered here (one GL context per actor, made on first use); a Parquet unit is read
from its shard (the row group kept for the next object) and resized to train.resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.render import fault_drill
from zv_ray.config import RunConfig
from zv_ray.data.parquet import ShardRows
from zv_ray.data.records import SAMPLE_COLUMNS, render_samples, resized_samples, stored_samples
from zv_ray.render.renderer import Renderer

# Columns of a unit's samples: where they come from (for the order check and the audit), then SAMPLE_COLUMNS.
UNIT_COLUMNS = ("unit", "source", "index", "view_pass", "sample")


class SampleActor:
    """Batch {unit, source, index, view_pass: [N] int64} -> the N units' samples, k rows each: UNIT_COLUMNS (sample =
    j, the sample's place within its unit) and SAMPLE_COLUMNS at train.resolution. `sources` (pipeline.source_sets)
    says how to reach each data.sources entry: {"kind": "zeroverse", "first_id": ...} or {"kind": "parquet",
    "shards": [[path, rows], ...]}."""

    def __init__(self, config: dict[str, Any], sources: list[dict[str, Any]]) -> None:
        self.cfg = RunConfig.model_validate(config)
        self.sources = sources
        self.rows = {i: ShardRows([tuple(s) for s in src["shards"]]) for i, src in enumerate(sources)
                     if src["kind"] == "parquet"}
        self.renderer: Renderer | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fault_drill()
        units = [self._unit(*map(int, row)) for row in
                 zip(batch["unit"], batch["source"], batch["index"], batch["view_pass"])]
        return {k: np.concatenate([u[k] for u in units]) for k in (*UNIT_COLUMNS, *SAMPLE_COLUMNS)}

    def _unit(self, unit: int, source: int, index: int, view_pass: int) -> dict[str, np.ndarray]:
        cfg, src = self.cfg, self.sources[source]
        if src["kind"] == "zeroverse":
            object_id = src["first_id"] + index
            if self.renderer is None:
                self.renderer = Renderer.from_config(cfg.render, cfg.train.resolution)
            try:
                samples = render_samples(cfg.seed, object_id, cfg, self.renderer, view_pass)
            except Exception as err:
                raise RuntimeError(f"object {object_id} (seed {cfg.seed}) failed to generate or render: {err}") from err
        else:
            samples = resized_samples(stored_samples(self.rows[source].record(index), cfg, view_pass), cfg.train.resolution)
        k = len(samples["object_id"])
        where = {"unit": unit, "source": source, "index": index, "view_pass": view_pass}
        return samples | {c: np.full(k, v, np.int64) for c, v in where.items()} | {"sample": np.arange(k, dtype=np.int64)}
