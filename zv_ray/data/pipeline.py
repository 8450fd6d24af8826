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
from zv_ray.data.parquet import CorruptShardError, valid_shards, write_shard
from zv_ray.data.schema import RecordError, row_to_record

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)

# Blocks of ids: one id per block balances the actors and bounds retried work; capped because every
# block costs the driver some metadata (5 M ids become 16 K blocks of ~300).
_MAX_ID_BLOCKS = 16384
# Shard writers only serialize and copy bytes.
_WRITER_NUM_CPUS = 0.25
MANIFEST = "dataset.json"


def _rendered(cfg: RunConfig, first_id: int, count: int, output: Literal["tensors", "record"]) -> Dataset:
    """ray.data.range(count) -> ZeroverseRenderActor pool: ids first_id .. first_id + count - 1."""
    import ray.data

    from actors import ZeroverseRenderActor

    data = cfg.data
    ids = ray.data.range(count, override_num_blocks=min(count, _MAX_ID_BLOCKS))
    # Ray Data's actor pools restart a dead actor and retry its in-flight batch without limit (its
    # default); a Python exception is not retried and fails the run, naming the object id.
    return ids.map_batches(
        ZeroverseRenderActor,
        fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "first_id": first_id, "output": output},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=data.num_generator_actors),
        num_cpus=data.generator_num_cpus,
        num_gpus=data.generator_num_gpus,
        resources={data.generator_resource: 1} if data.generator_resource else None,
    )


def object_stream(cfg: RunConfig, first_id: int, count: int) -> Dataset:
    """A ray.data.Dataset of rendered objects with numpy tensor columns:
    object_id int64, rgba [V, H, W, 4] uint8 (RGB on white + alpha), intrinsics [V, 4], c2w [V, 4, 4].

    data.source "online": ids first_id .. first_id + count - 1 generated and rendered by actors.
    data.source "parquet": every valid shard under data.parquet_path, decoded to the same columns
    (first_id and count are ignored: the shards are the dataset)."""
    if cfg.data.source == "online":
        return _rendered(cfg, first_id, count, "tensors")
    import ray.data

    paths = [str(p) for p in valid_shards(cfg.data.parquet_path, cfg.data.on_corrupt)]
    return ray.data.read_parquet(paths, include_paths=True).map_batches(
        decode_batch, batch_format="pyarrow", fn_kwargs={"on_corrupt": cfg.data.on_corrupt}
    )


def decode_batch(table: pa.Table, on_corrupt: Literal["fail", "skip"] = "fail") -> dict[str, np.ndarray]:
    """Rows read from shards (with their "path") -> the stream's tensor columns."""
    out: dict[str, list] = {"object_id": [], "rgba": [], "intrinsics": [], "c2w": []}
    for row in table.to_pylist():
        try:
            rec = row_to_record(row)
        except RecordError as err:
            msg = f"{row['path']} (object {row['object_id']}): {err}"
            if on_corrupt == "fail":
                raise CorruptShardError(msg) from None
            log.warning("skipping corrupt row: %s", msg)
            continue
        for key in out:
            out[key].append(rec[key])
    return {k: np.stack(v) if v else np.empty((0,)) for k, v in out.items()}


def _write_batch(table: pa.Table, out_dir: str) -> pa.Table:
    """One shard per batch; returns what it wrote, so the driver can count and check ids."""
    path = write_shard(table, out_dir)
    return pa.table(
        {
            "shard": [path.name],
            "bytes": [path.stat().st_size],
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
    out = Path(out_dir)
    if out.is_dir() and any(out.glob("*.parquet")):
        raise FileExistsError(f"{out} already holds shards; write to an empty folder (ids would repeat)")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = _rendered(cfg, first_id, count, "record").map_batches(
        _write_batch,
        batch_size=cfg.data.objects_per_shard,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out)},
        num_cpus=_WRITER_NUM_CPUS,
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
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return summary


def _check_ids(ids: list[int], first_id: int, count: int) -> None:
    want = set(range(first_id, first_id + count))
    got = set(ids)
    if len(ids) != count or got != want:
        dup = len(ids) - len(got)
        raise RuntimeError(
            f"dataset ids are wrong: {len(want - got)} missing (e.g. {sorted(want - got)[:5]}), "
            f"{dup} duplicated, {len(got - want)} unexpected"
        )
