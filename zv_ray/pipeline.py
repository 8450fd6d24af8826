"""Ray Data pipelines: object ids -> generator+renderer actors -> a training stream or Parquet shards.

    object_stream(cfg, first_id, count)   # feeds TorchTrainer(datasets={"train": ...})
    write_dataset(cfg, out_dir, count)    # `zv-ray dataset`

Object ids are the unit of determinism: id k is a pure function of (seed, k, config), so a retried
actor batch reproduces the same objects; write_dataset checks that every id is written exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zv_ray.config import RunConfig
from zv_ray.data.parquet import CorruptShardError, open_shard, valid_shards, write_shard
from zv_ray.data.records import SAMPLE_COLUMNS, stored_samples
from zv_ray.data.schema import RecordError, row_to_record
from zv_ray.io import storage

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)

# Blocks of ids: one id per block balances the actors and bounds retried work; capped because every
# block costs the driver some metadata (5 M ids become 16 K blocks of ~300).
_MAX_ID_BLOCKS = 16384
# Generator actor memory (generator_memory_bytes), fitted to peak RSS under init_ray's malloc settings
# (never trimmed, so the peak is the high-water mark of the largest objects): paper stage 1 (k = 8, 8 x 256 px,
# mesh 50) peaked at 840 MB over 120 objects outside Ray, and a Ray worker adds ~200 MB (benchmarks/stream.py).
# Fixed process MB (Ray worker, Mesa, generator; torch for the samples' view picks), bytes per output pixel
# (render, gather, encode), per GL sample (colour, depth, readback), per mesh_resolution^2.
_SAMPLES_FIXED_MB, _RECORD_FIXED_MB = 650, 500
_BYTES_PER_PIXEL, _BYTES_PER_GL_SAMPLE, _MESH_BYTES_PER_RES2 = 24, 40, 140_000
_MARGIN = 1.25
# Shard writers only serialize and copy bytes.
WRITER_NUM_CPUS = 0.25
MANIFEST = "dataset.json"


def generator_memory_bytes(cfg: RunConfig, output: Literal["samples", "record"]) -> int:
    """Ray memory request of one generator actor: data.generator_memory_mb, else a fit to measured peaks
    (tests/test_actor_memory.py, benchmarks/stream.py): a fixed process (Python, Mesa, the generator;
    torch in the training stream) plus the per-object arrays, with margin."""
    if cfg.data.generator_memory_mb:
        return cfg.data.generator_memory_mb * 2**20
    r = cfg.render
    if output == "samples":
        views = min(r.num_views, cfg.data.samples_per_object * (cfg.train.num_input_views + cfg.train.num_target_views))
        side, fixed_mb = cfg.train.resolution, _SAMPLES_FIXED_MB
    else:
        views, side, fixed_mb = r.num_views, r.resolution, _RECORD_FIXED_MB
    per_object = views * side**2 * _BYTES_PER_PIXEL + (r.supersample * side) ** 2 * _BYTES_PER_GL_SAMPLE
    mesh = _MESH_BYTES_PER_RES2 * cfg.zeroverse.mesh_resolution**2
    return int(_MARGIN * (fixed_mb * 2**20 + per_object + mesh))


def stream_passes(cfg: RunConfig, count: int) -> int:
    """Passes over `count` ids that one training run reads, streamed back to back: each pass draws new view
    subsets of the same objects, as the paper's epochs drew new views of its 800K renders. A materialized
    set is rendered once (one pass, its samples fixed)."""
    if cfg.data.materialize:
        return 1
    samples = cfg.train.steps * cfg.train.batch_size_per_worker * cfg.cluster.num_workers
    return max(1, -(-samples // (count * cfg.data.samples_per_object)))


def render_stream(
    cfg: RunConfig, first_id: int, count: int, output: Literal["samples", "record"], passes: int = 1
) -> Dataset:
    """Ids 0 .. count * passes - 1 -> ZeroverseRenderActor pool: ids first_id .. first_id + count - 1,
    `passes` times (offset o is object first_id + o % count in view pass o // count)."""
    import ray.data

    from actors import ZeroverseRenderActor

    data = cfg.data
    total = count * passes
    # Id blocks are put in the object store by the driver, not read by Ray Data's read tasks: a read task
    # holds a CPU of its own, and with the actors holding every CPU of a small node it never starts (a silent
    # hang on a 2-CPU head). The blocks take no resources, so the actors' request is the whole demand.
    bounds = np.linspace(0, total, min(total, _MAX_ID_BLOCKS) + 1).astype(np.int64)
    ids = ray.data.from_arrow([pa.table({"id": np.arange(a, b, dtype=np.int64)}) for a, b in zip(bounds, bounds[1:])])
    # Ray Data's actor pools restart a dead actor and retry its in-flight batch without limit (its
    # default); a Python exception is not retried and fails the run, naming the object id.
    return ids.map_batches(
        ZeroverseRenderActor,
        fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "first_id": first_id, "count": count, "output": output},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=data.num_generator_actors),
        num_cpus=data.generator_num_cpus,
        num_gpus=data.generator_num_gpus,
        memory=generator_memory_bytes(cfg, output),
        resources={data.generator_resource: 1} if data.generator_resource else None,
    )


def object_stream(cfg: RunConfig, first_id: int, count: int) -> Dataset:
    """The training stream, a ray.data.Dataset of samples with numpy tensor columns (records.SAMPLE_COLUMNS):
    object_id int64, rgb [V, H, W, 3] uint8 (on white), intrinsics [V, 4], c2w [V, 4, 4], where the V =
    train.num_input_views + num_target_views views (inputs first) are chosen by records.sample_picks, pure in
    (seed, object id, view pass), whatever the source: each object serves data.samples_per_object samples per
    pass, for as many passes as train.steps needs (stream_passes).

    data.source "online": ids first_id .. first_id + count - 1, generated and rendered at train.resolution by
    the actors. data.source "parquet": every object of every valid shard under data.parquet_path, its picked
    views at their stored resolution (the trainer resizes; first_id and count are ignored: the shards are the
    dataset)."""
    if cfg.data.source == "online":
        return render_stream(cfg, first_id, count, "samples", stream_passes(cfg, count))
    import ray.data

    paths = [str(p) for p in valid_shards(cfg.data.parquet_path, cfg.data.on_corrupt)]
    objects = sum(open_shard(p).metadata.num_rows for p in paths)
    config = cfg.model_dump(mode="json")
    passes = [
        ray.data.read_parquet(paths, include_paths=True).map_batches(
            decode_samples, batch_format="pyarrow",
            fn_kwargs={"config": config, "view_pass": view_pass, "on_corrupt": cfg.data.on_corrupt})
        for view_pass in range(stream_passes(cfg, objects))
    ]
    return passes[0].union(*passes[1:]) if len(passes) > 1 else passes[0]


def decode_samples(table: pa.Table, config: dict[str, Any], view_pass: int,
                   on_corrupt: Literal["fail", "skip"] = "fail") -> dict[str, np.ndarray]:
    """Rows read from shards (with their "path") -> each object's training samples of `view_pass`
    (records.stored_samples), the online stream's columns."""
    cfg = RunConfig.model_validate(config)
    samples = []
    for row in table.to_pylist():
        try:
            rec = row_to_record(row)
        except RecordError as err:
            msg = f"{row['path']} (object {row['object_id']}): {err}"
            if on_corrupt == "fail":
                raise CorruptShardError(msg) from None
            log.warning("skipping corrupt row: %s", msg)
            continue
        samples.append(stored_samples(rec, cfg, view_pass))
    if not samples:
        return {k: np.empty((0,)) for k in SAMPLE_COLUMNS}
    return {k: np.concatenate([s[k] for s in samples]) for k in SAMPLE_COLUMNS}


def _write_batch(table: pa.Table, out_dir: str) -> pa.Table:
    """One shard per batch; returns what it wrote, so the driver can count and check ids."""
    path = write_shard(table, out_dir)
    return pa.table(
        {
            "shard": [storage.name(path)],
            "bytes": [storage.size(path)],
            "views": [pc.sum(table["num_views"]).as_py()],
            "object_ids": [table["object_id"].to_pylist()],
        }
    )


def write_dataset(
    cfg: RunConfig,
    out_dir: str | Path,
    count: int,
    first_id: int = 0,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Render ids first_id .. first_id + count - 1 into Parquet shards under out_dir (plus dataset.json).

    `on_shard` sees each written shard ({shard, bytes, views, object_ids}) as it lands, for progress.
    Returns {objects, views, bytes, shards, seconds}."""
    out = storage.absolute(out_dir)
    check_output_folder(out)
    start = time.perf_counter()
    written = render_stream(cfg, first_id, count, "record").map_batches(
        _write_batch,
        batch_size=cfg.data.objects_per_shard,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out)},
        num_cpus=WRITER_NUM_CPUS,
    )
    ids: list[int] = []
    summary = {"objects": 0, "views": 0, "bytes": 0, "shards": 0}
    for row in written.iter_rows():
        shard = {**row, "object_ids": [int(i) for i in row["object_ids"]]}
        ids.extend(shard["object_ids"])
        summary["objects"] += len(shard["object_ids"])
        summary["views"] += shard["views"]
        summary["bytes"] += shard["bytes"]
        summary["shards"] += 1
        if on_shard:
            on_shard(shard)
    _check_ids(ids, first_id, count)
    summary["seconds"] = time.perf_counter() - start
    manifest = {"first_id": first_id, "count": count, "summary": summary, "config": cfg.model_dump(mode="json")}
    storage.write_bytes(storage.join(out, MANIFEST), json.dumps(manifest, indent=2).encode())
    return summary


def check_output_folder(out: str) -> None:
    """A dataset goes into a new or empty folder (local or remote), checked before any rendering starts."""
    if storage.is_file(out):
        raise FileExistsError(f"--out {out} is a file; give a folder for the shards")
    if storage.is_dir(out) and storage.list_files(out, ".parquet"):
        raise FileExistsError(f"{out} already holds shards; write to an empty folder (ids would repeat)")
    storage.check_writable(out)


def _check_ids(ids: list[int], first_id: int, count: int) -> None:
    want = set(range(first_id, first_id + count))
    got = set(ids)
    if len(ids) != count or got != want:
        dup = len(ids) - len(got)
        raise RuntimeError(
            f"dataset ids are wrong: {len(want - got)} missing (e.g. {sorted(want - got)[:5]}), "
            f"{dup} duplicated, {len(got - want)} unexpected"
        )
