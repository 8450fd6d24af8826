"""Ray Data pipelines: work items -> generator+renderer actors -> a training stream or Parquet shards.

    unit_stream(cfg, sources, units, pool_size)                # one train worker's samples (zv_ray.train.feed)
    materialized_units(cfg, sources)                           # data.materialize: every object once, before training
    write_dataset(cfg, out_dir, count)                         # `zv-ray dataset`
    write_mesh_dataset(cfg, root, files, folders, out_dir)     # `zv-ray dataset --meshes`
    write_rendered_dataset(cfg, root, folders, skipped, out)   # `zv-ray dataset --rendered`

Object ids are the unit of determinism: id k is a pure function of (seed, k, config), so a retried
actor batch reproduces the same objects; write_dataset checks that every id is written exactly once.
A real object's id is a pure function of its source name (zv_ray.data.records.source_id).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zv_ray.config import RunConfig
from zv_ray.data.layout import read_object_folder
from zv_ray.data.meshes import meshes_under
from zv_ray.data.parquet import NothingRendered, shard_sizes, write_shard
from zv_ray.data.records import MESH_SOURCE, RENDERED_SOURCE, skipped_record, source_name
from zv_ray.data.schema import SCHEMA, SKIPPED, records_to_table
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
# Shard writers and mesh listing tasks only move bytes.
IO_NUM_CPUS = 0.25
MANIFEST = "dataset.json"
# Beside the shards of a --meshes / --rendered dataset: every input that was skipped, and why.
SKIPPED_FILE = "skipped.json"
# What each shard writer reports to the driver.
_WRITTEN = pa.schema([("shard", pa.string()), ("bytes", pa.int64()), ("views", pa.int64()),
                      ("object_ids", pa.list_(pa.int64())),
                      ("skipped", pa.list_(pa.struct([("source", pa.string()), ("reason", pa.string())])))])


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


def render_stream(cfg: RunConfig, first_id: int, count: int) -> Dataset:
    """Ids first_id .. first_id + count - 1 -> ZeroverseRenderActor pool -> dataset records."""
    import ray.data

    from actors import ZeroverseRenderActor

    ids = ray.data.from_arrow(_blocks(pa.table({"id": np.arange(count, dtype=np.int64)})))
    return ids.map_batches(
        ZeroverseRenderActor,
        fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "first_id": first_id},
        **_actor_pool(cfg, "record", cfg.data.num_generator_actors),
    )


def _blocks(table: pa.Table) -> list[pa.Table]:
    """A table of work items as object-store blocks, put there by the driver rather than read by Ray Data's read
    tasks: a read task holds a CPU of its own, and with the actors holding every CPU of a small node it never starts
    (a silent hang on a 2-CPU head). One item per block balances the actors, capped (_MAX_ID_BLOCKS)."""
    bounds = np.linspace(0, table.num_rows, min(table.num_rows, _MAX_ID_BLOCKS) + 1).astype(np.int64)
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]


def _actor_pool(cfg: RunConfig, output: Literal["samples", "record"], size: int) -> dict[str, Any]:
    """map_batches options of `size` generator+renderer actors: one item per call, data.* resources.

    Ray Data's actor pools restart a dead actor and retry its in-flight batch without limit (its default); a
    Python exception is not retried and fails the run, naming the object."""
    import ray.data

    data = cfg.data
    return {
        "batch_size": 1,
        "compute": ray.data.ActorPoolStrategy(size=size),
        "num_cpus": data.generator_num_cpus,
        "num_gpus": data.generator_num_gpus,
        "memory": generator_memory_bytes(cfg, output),
        "resources": {data.generator_resource: 1} if data.generator_resource else None,
    }


def source_sets(cfg: RunConfig) -> list[dict[str, Any]]:
    """How the actors reach each data.sources entry, and its size: {"kind": "zeroverse", "first_id", "count"} or
    {"kind": "parquet", "shards": [[path, objects], ...], "count"} (every footer checked here, once, by the driver:
    a corrupt shard is named before any cluster work)."""
    out = []
    for src in cfg.data.sources:
        if src.kind == "zeroverse":
            out.append({"kind": "zeroverse", "first_id": cfg.data.first_object_id, "count": cfg.data.num_objects})
        else:
            shards = shard_sizes(src.path, cfg.data.on_corrupt)
            out.append({"kind": "parquet", "shards": [list(s) for s in shards], "count": sum(n for _, n in shards)})
    return out


def generator_pool_size(cfg: RunConfig, workers: int) -> int:
    """Actors of each train worker's stream: data.num_generator_actors shared out over the workers."""
    return -(-cfg.data.num_generator_actors // workers)


def unit_stream(cfg: RunConfig, sources: list[dict[str, Any]], units: pa.Table, pool_size: int) -> Dataset:
    """One train worker's stream: `units` (columns unit, source, index, view_pass: zv_ray.data.plan, in unit order)
    -> `pool_size` SampleActors -> each unit's samples (actors.samples.UNIT_COLUMNS + records.SAMPLE_COLUMNS), in the
    same order (the caller sets DataContext.execution_options.preserve_order)."""
    import ray.data

    from actors import SampleActor

    return ray.data.from_arrow(_blocks(units)).map_batches(
        SampleActor, fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "sources": sources},
        **_actor_pool(cfg, "samples", pool_size),
    )


def materialized_units(cfg: RunConfig, sources: list[dict[str, Any]]) -> Dataset:
    """data.materialize: every object of every source with a weight, its view pass 0 samples, rendered (or read) once
    by data.num_generator_actors actors and kept in Ray's object store; the workers look units up in it."""
    weights = [s.weight for s in cfg.data.sources]
    src = np.concatenate([np.full(s["count"], i, np.int64) for i, s in enumerate(sources) if weights[i] > 0])
    index = np.concatenate([np.arange(s["count"], dtype=np.int64) for i, s in enumerate(sources) if weights[i] > 0])
    table = pa.table({"unit": np.full(len(src), -1, np.int64), "source": src, "index": index,
                      "view_pass": np.zeros(len(src), np.int64)})
    return unit_stream(cfg, sources, table, cfg.data.num_generator_actors).materialize()


def _write_batch(table: pa.Table, out_dir: str) -> pa.Table:
    """One shard per batch, its skipped inputs left out; returns what it wrote and skipped (_WRITTEN), so the
    driver can count and check ids."""
    if SKIPPED not in table.column_names:  # Zeroverse objects are never skipped
        table = table.append_column(SKIPPED, pa.nulls(table.num_rows, pa.string()))
    rendered = table.filter(pc.is_null(table[SKIPPED])).select(SCHEMA.names)
    skipped = table.filter(pc.is_valid(table[SKIPPED]))
    path = write_shard(rendered, out_dir) if rendered.num_rows else None
    return pa.table(
        {
            "shard": [storage.name(path) if path else None],
            "bytes": [storage.size(path) if path else 0],
            "views": [pc.sum(rendered["num_views"]).as_py() or 0],
            "object_ids": [rendered["object_id"].to_pylist()],
            "skipped": [[{"source": src, "reason": why}
                         for src, why in zip(skipped["source"].to_pylist(), skipped[SKIPPED].to_pylist())]],
        },
        schema=_WRITTEN,
    )


def write_dataset(
    cfg: RunConfig,
    out_dir: str | Path,
    count: int,
    first_id: int = 0,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Render ids first_id .. first_id + count - 1 into Parquet shards under out_dir (plus dataset.json).

    `on_shard` sees each written shard ({shard, bytes, views, object_ids, skipped}) as it lands, for progress.
    Returns {objects, views, bytes, shards, seconds}."""
    out = storage.absolute(out_dir)
    check_output_folder(out)
    start = time.perf_counter()
    summary, ids, _ = _write_shards(render_stream(cfg, first_id, count), cfg, out, on_shard)
    _check_ids(ids, first_id, count)
    return _finish(cfg, out, summary, start, {"first_id": first_id, "count": count})


def write_mesh_dataset(
    cfg: RunConfig,
    root: str,
    files: list[str],
    folders: list[str],
    out_dir: str | Path,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Render the mesh `files` directly inside folder `root` and every mesh below its `folders`
    (zv_ray.data.meshes.mesh_entries) into Parquet shards under out_dir, with dataset.json and skipped.json. Each
    folder is listed by a task of its own, as the actors render, so no process lists or holds the whole tree.
    NothingRendered when every mesh was skipped.

    Returns {objects, views, bytes, shards, skipped, seconds}; `on_shard` as in write_dataset."""
    import ray.data

    from actors import MeshRenderActor

    out = storage.absolute(out_dir)
    check_output_folder(out)
    start = time.perf_counter()
    entries = [{"entry": f, "folder": False} for f in files] + [{"entry": f, "folder": True} for f in folders]
    paths = ray.data.from_items(entries).flat_map(_list_meshes, fn_kwargs={"root": root}, num_cpus=IO_NUM_CPUS)
    records = paths.map_batches(MeshRenderActor, fn_constructor_kwargs={"config": cfg.model_dump(mode="json")},
                                **_actor_pool(cfg, "record", cfg.data.num_generator_actors))
    summary, ids, skipped = _write_shards(records, cfg, out, on_shard)
    _check_unique(ids)
    return _finish(cfg, out, summary, start, {"meshes": root}, skipped)


def _list_meshes(row: dict[str, Any], root: str) -> list[dict[str, str]]:
    """One entry of the --meshes folder (a mesh file, or a folder listed here) -> a row per mesh, with its source name."""
    paths = meshes_under(row["entry"]) if row["folder"] else [row["entry"]]
    return [{"path": p, "source": source_name(MESH_SOURCE, root, p)} for p in paths]


def write_rendered_dataset(
    cfg: RunConfig,
    root: str,
    folders: list[str],
    skipped: list[dict[str, str]],
    out_dir: str | Path,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Import object folders of the official layout (zv_ray.data.layout.find_object_folders: their cameras are
    checked, `skipped` lists the folders without a cameras file) into Parquet shards under out_dir, with
    dataset.json and skipped.json; data.num_generator_actors import tasks at a time. NothingRendered when
    nothing imported. Returns {objects, views, bytes, shards, skipped, seconds}; `on_shard` as in write_dataset."""
    import ray.data

    out = storage.absolute(out_dir)
    check_output_folder(out)
    start = time.perf_counter()
    records = ray.data.from_items([{"folder": f} for f in folders]).map_batches(
        _import_batch,
        fn_kwargs={"root": root, "seed": cfg.seed, "image_format": cfg.data.image_format,
                   "png_level": cfg.data.png_compress_level},
        batch_size=1,
        concurrency=cfg.data.num_generator_actors,
        num_cpus=cfg.data.generator_num_cpus,
    )
    summary, ids, failed = _write_shards(records, cfg, out, on_shard)
    _check_unique(ids)
    return _finish(cfg, out, summary, start, {"rendered": root}, skipped + failed)


def _import_batch(batch: dict[str, np.ndarray], root: str, seed: int, image_format: str, png_level: int) -> pa.Table:
    """Object folders -> dataset rows, plus the SKIPPED column: a missing, unreadable or mis-sized image skips its
    object (the run goes on)."""
    records, skipped = [], []
    for folder in map(str, batch["folder"]):
        try:
            records.append(read_object_folder(root, folder, seed))
            skipped.append(None)
        except (FileNotFoundError, ValueError) as err:
            records.append(skipped_record(seed, source_name(RENDERED_SOURCE, root, folder)))
            skipped.append(str(err))
    return records_to_table(records, image_format, png_level, skipped)


def _write_shards(
    records: Dataset, cfg: RunConfig, out: str, on_shard: Callable[[dict[str, Any]], None] | None
) -> tuple[dict[str, Any], list[int], list[dict[str, str]]]:
    """Record batches -> shards of at most data.objects_per_shard objects: (summary, ids written, skipped inputs)."""
    written = records.map_batches(
        _write_batch,
        batch_size=cfg.data.objects_per_shard,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": out},
        num_cpus=IO_NUM_CPUS,
    )
    ids: list[int] = []
    skipped: list[dict[str, str]] = []
    summary = {"objects": 0, "views": 0, "bytes": 0, "shards": 0}
    for row in written.iter_rows():
        shard = {**row, "object_ids": [int(i) for i in row["object_ids"]], "skipped": list(row["skipped"])}
        ids.extend(shard["object_ids"])
        skipped.extend(shard["skipped"])
        summary["objects"] += len(shard["object_ids"])
        summary["views"] += shard["views"]
        summary["bytes"] += shard["bytes"]
        summary["shards"] += shard["shard"] is not None
        if on_shard:
            on_shard(shard)
    return summary, ids, skipped


def _finish(cfg: RunConfig, out: str, summary: dict[str, Any], start: float, inputs: dict[str, Any],
            skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """dataset.json (inputs, summary, config) and, for real objects, skipped.json; the summary with its seconds."""
    summary["seconds"] = time.perf_counter() - start
    if skipped is not None:
        summary["skipped"] = len(skipped)
        listed = sorted(skipped, key=lambda s: s["source"])
        storage.write_bytes(storage.join(out, SKIPPED_FILE), json.dumps(listed, indent=1).encode())
        if not summary["objects"]:
            raise NothingRendered(
                f"nothing to write: all {len(skipped)} inputs were skipped (why: {storage.join(out, SKIPPED_FILE)})")
    manifest = {**inputs, "summary": summary, "config": cfg.model_dump(mode="json")}
    storage.write_bytes(storage.join(out, MANIFEST), json.dumps(manifest, indent=2).encode())
    return summary


def check_output_folder(out: str) -> None:
    """A dataset goes into a new or empty folder (local or remote), checked before any rendering starts."""
    if storage.is_file(out):
        raise FileExistsError(f"--out {out} is a file; give a folder for the shards")
    if storage.is_dir(out) and storage.list_files(out, ".parquet"):
        raise FileExistsError(f"{out} already holds shards; write to an empty folder (ids would repeat)")
    storage.check_writable(out)


def _check_unique(ids: list[int]) -> None:
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise RuntimeError(f"dataset ids repeat: {len(repeated)} written more than once (e.g. {repeated[:5]})")


def _check_ids(ids: list[int], first_id: int, count: int) -> None:
    want = set(range(first_id, first_id + count))
    got = set(ids)
    if len(ids) != count or got != want:
        dup = len(ids) - len(got)
        raise RuntimeError(
            f"dataset ids are wrong: {len(want - got)} missing (e.g. {sorted(want - got)[:5]}), "
            f"{dup} duplicated, {len(got - want)} unexpected"
        )
