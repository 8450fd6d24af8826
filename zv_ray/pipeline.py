"""Ray Data pipelines: object ids -> generator+renderer actors -> a training stream or Parquet shards.

    object_stream(cfg, first_id, count)                        # feeds TorchTrainer(datasets={"train": ...})
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
from zv_ray.data.parquet import CorruptShardError, NothingRendered, open_shard, valid_shards, write_shard
from zv_ray.data.records import MESH_SOURCE, RENDERED_SOURCE, SAMPLE_COLUMNS, skipped_record, source_name, stored_samples
from zv_ray.data.schema import SCHEMA, SKIPPED, RecordError, records_to_table, row_to_record
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

    total = count * passes
    # Id blocks are put in the object store by the driver, not read by Ray Data's read tasks: a read task
    # holds a CPU of its own, and with the actors holding every CPU of a small node it never starts (a silent
    # hang on a 2-CPU head). The blocks take no resources, so the actors' request is the whole demand.
    bounds = np.linspace(0, total, min(total, _MAX_ID_BLOCKS) + 1).astype(np.int64)
    ids = ray.data.from_arrow([pa.table({"id": np.arange(a, b, dtype=np.int64)}) for a, b in zip(bounds, bounds[1:])])
    return ids.map_batches(
        ZeroverseRenderActor,
        fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "first_id": first_id, "count": count, "output": output},
        **_actor_pool(cfg, output),
    )


def _actor_pool(cfg: RunConfig, output: Literal["samples", "record"]) -> dict[str, Any]:
    """map_batches options of the generator+renderer actors: one object per call, data.* resources.

    Ray Data's actor pools restart a dead actor and retry its in-flight batch without limit (its default); a
    Python exception is not retried and fails the run, naming the object."""
    import ray.data

    data = cfg.data
    return {
        "batch_size": 1,
        "compute": ray.data.ActorPoolStrategy(size=data.num_generator_actors),
        "num_cpus": data.generator_num_cpus,
        "num_gpus": data.generator_num_gpus,
        "memory": generator_memory_bytes(cfg, output),
        "resources": {data.generator_resource: 1} if data.generator_resource else None,
    }


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
    summary, ids, _ = _write_shards(render_stream(cfg, first_id, count, "record"), cfg, out, on_shard)
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
                                **_actor_pool(cfg, "record"))
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
