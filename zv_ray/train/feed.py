"""One train worker's samples, step by step, in the data plan's order (zv_ray.data.plan): the samples of global step s
are the same whatever the worker count and however often the run was restored.

Streamed, the worker's own Ray Data stream renders (or reads) the units of its slots from the restored step on, in
unit order; the feed keeps the units of the current shuffle blocks and hands each step its samples. Materialized
(data.materialize), every object's samples were made once before training and the feed looks units up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from zv_ray.config import RunConfig
from zv_ray.data.plan import DataPlan, micro_batches, worker_slots
from zv_ray.data.records import SAMPLE_COLUMNS


@dataclass
class StepSamples:
    micro: list[dict[str, torch.Tensor]]  # per micro-batch: SAMPLE_COLUMNS stacked over its samples
    consumed: list[list[int]]  # [source, object_id, sample_index] per sample, slot order (the audit's record)
    waited_s: float  # time spent waiting for units that were not there yet


class StreamStalled(RuntimeError):
    """The worker's stream produced nothing for data.stall_timeout_s: its actors cannot run."""


class StreamedUnits:
    """Units arriving in unit order from the worker's stream, kept until their shuffle block is done. A thread pulls
    the stream, so a stream that stops (its actors lost with their nodes, and no capacity coming back) ends in one
    clear error after `stall_timeout_s`, not a hang."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]], stall_timeout_s: float = 900.0, ahead: int = 2):
        self.units: dict[int, dict[str, np.ndarray]] = {}
        self.last = -1  # the highest unit received
        self.stall_timeout_s = stall_timeout_s
        self._arrived: queue.Queue = queue.Queue(maxsize=ahead)
        threading.Thread(target=self._pull, args=(batches,), name="unit-stream", daemon=True).start()

    def _pull(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
        try:
            for batch in batches:
                self._arrived.put(batch)
            self._arrived.put(None)
        except BaseException as err:  # noqa: BLE001 - handed to the training thread, which raises it
            self._arrived.put(err)

    def _next(self) -> dict[str, np.ndarray] | None:
        try:
            got = self._arrived.get(timeout=self.stall_timeout_s)
        except queue.Empty:
            raise StreamStalled(
                f"no training units for {self.stall_timeout_s:g} s (data.stall_timeout_s): the stream's actors cannot "
                "run; `ray status` shows their pending demand (a lost render node that did not come back?)"
            ) from None
        if isinstance(got, BaseException):
            raise got
        return got

    def get(self, unit: int, source: int, index: int) -> dict[str, np.ndarray]:
        while unit not in self.units:
            if unit < self.last:
                raise RuntimeError(f"unit {unit} was passed over by the stream (at {self.last}): its order is broken")
            batch = self._next()
            if batch is None:
                raise RuntimeError(f"the training stream ended before unit {unit}: it was built for fewer steps")
            for u in np.unique(batch["unit"]):
                at = batch["unit"] == u
                self.units[int(u)] = {k: v[at] for k, v in batch.items()}
                self.last = max(self.last, int(u))
        return self.units[unit]

    def forget_below(self, unit: int) -> None:
        for u in [u for u in self.units if u < unit]:
            del self.units[u]


class MaterializedUnits:
    """Every object's samples (view pass 0), loaded once from the materialized set, looked up by (source, index)."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]):
        self.objects: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for batch in batches:
            for key in set(zip(batch["source"].tolist(), batch["index"].tolist())):
                at = (batch["source"] == key[0]) & (batch["index"] == key[1])
                self.objects[key] = {k: v[at] for k, v in batch.items()}

    def get(self, unit: int, source: int, index: int) -> dict[str, np.ndarray]:
        return self.objects[(source, index)]

    def forget_below(self, unit: int) -> None:
        pass


class SampleFeed:
    """One worker's share of every step (its slots), from the units it holds, in micro-batches."""

    def __init__(self, plan: DataPlan, slots: range, max_micro: int, units: StreamedUnits | MaterializedUnits):
        self.plan, self.slots, self.units = plan, slots, units
        self.micro = micro_batches(len(slots), max_micro)

    def take(self, step: int) -> StepSamples:
        """The samples this worker trains on at global `step`, in micro-batches."""
        started = time.perf_counter()
        self.units.forget_below(self.plan.first_unit_of_block(step))
        units, js = self.plan.step_samples(step, self.slots)
        sources, indices, visits = self.plan.locate(units)
        picked = []
        for unit, j, source, index in zip(units.tolist(), js.tolist(), sources.tolist(), indices.tolist()):
            samples = self.units.get(unit, source, index)
            picked.append({k: samples[k][samples["sample"] == j][0] for k in SAMPLE_COLUMNS})
        consumed = [[s, int(p["object_id"]), v * self.plan.k + j]
                    for s, p, v, j in zip(sources.tolist(), picked, visits.tolist(), js.tolist())]
        micro = [{k: torch.from_numpy(np.stack([picked[i][k] for i in part])) for k in SAMPLE_COLUMNS}
                 for part in self.micro]
        return StepSamples(micro, consumed, time.perf_counter() - started)


def open_feed(cfg: RunConfig, sources: list[dict], rank: int, world: int, first_step: int, end_step: int) -> SampleFeed:
    """Worker `rank` of `world`'s feed for global steps first_step .. end_step - 1 (sources: pipeline.source_sets)."""
    import ray.data
    import ray.train

    from zv_ray.pipeline import generator_pool_size, unit_stream

    plan = DataPlan.from_config(cfg, [s["count"] for s in sources])
    slots = worker_slots(plan.batch, world, rank)
    if cfg.data.materialize:
        units = MaterializedUnits(ray.train.get_dataset_shard("units").iter_batches(batch_size=None))
        return SampleFeed(plan, slots, cfg.train.micro_batch_size, units)
    needed = plan.units_for(slots, first_step, end_step)
    source, index, visit = plan.locate(needed)
    table = pa.table({"unit": needed, "source": source, "index": index, "view_pass": visit})
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the feed takes units in unit order
    context.enable_progress_bars = False  # rank 0 prints the run's progress; Ray Data's bars would bury it
    stream = unit_stream(cfg, sources, table, generator_pool_size(cfg, world))
    batches = stream.iter_batches(batch_size=None, prefetch_batches=cfg.data.prefetch_batches)
    units = StreamedUnits(iter(batches), cfg.data.stall_timeout_s, cfg.data.prefetch_batches)
    return SampleFeed(plan, slots, cfg.train.micro_batch_size, units)
