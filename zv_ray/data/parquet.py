"""Parquet shards of rendered objects: atomic writes, validated reads that name what is corrupt."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zv_ray.data.schema import SCHEMA, RecordError, row_to_record, schema_mismatch
from zv_ray.io import storage
from zv_ray.io.atomic import atomic_path

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".parquet"
# Rows per row group: bounds reader memory (a raw 512 px object is 32 MiB).
ROW_GROUP_OBJECTS = 8


class CorruptShardError(ValueError):
    """A shard that is unreadable, has the wrong schema, or holds a row that does not decode."""


class NothingRendered(RuntimeError):
    """A dataset that would hold no object: every input of `zv-ray dataset --meshes` / `--rendered` was skipped."""


def shard_name(table: pa.Table) -> str:
    """Named by the smallest object id it holds: unique, since every id is in exactly one shard."""
    first = pc.min(table["object_id"]).as_py()
    return f"shard-{first:012d}{SHARD_SUFFIX}"


def write_shard(table: pa.Table, out_dir: str | Path) -> str:
    """Write `table` as one shard, atomically: readers never see a partial file under a shard name.

    Locally a temp file is renamed into place; an object store (s3://, gs://) publishes the object on close."""
    if table.num_rows == 0:
        raise ValueError("refusing to write an empty shard")
    if (diff := schema_mismatch(table.schema)) is not None:
        raise ValueError(f"table does not match the dataset schema: {diff}")
    table = table.replace_schema_metadata(SCHEMA.metadata)
    final = storage.join(out_dir, shard_name(table))
    # A retried writer replaces its own shard with identical rows.
    if not storage.is_remote(final):
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_OBJECTS)
        return final
    fs, inner = storage.filesystem(final)
    with fs.open_output_stream(inner) as stream:
        pq.write_table(table, stream, row_group_size=ROW_GROUP_OBJECTS)
    return final


def shard_paths(path: str | Path) -> list[str]:
    """A shard file, or every shard in a folder (hidden temp files excluded), sorted; local or remote."""
    path = storage.absolute(path)
    if storage.is_file(path):
        return [path]
    if not storage.is_dir(path):
        raise FileNotFoundError(f"no dataset at {path} (expected a folder of {SHARD_SUFFIX} shards)")
    shards = storage.list_files(path, SHARD_SUFFIX)
    if not shards:
        raise FileNotFoundError(f"no {SHARD_SUFFIX} shards in {path}")
    return shards


def open_shard(path: str) -> pq.ParquetFile:
    """Open and check a shard's footer and schema; CorruptShardError names the file."""
    fs, inner = storage.filesystem(path)
    try:
        shard = pq.ParquetFile(fs.open_input_file(inner))
    except (pa.ArrowException, OSError) as err:
        raise CorruptShardError(
            f"{path}: not a readable Parquet file ({err}); it is truncated or damaged: delete it and regenerate, "
            "or set data.on_corrupt=skip"
        ) from None
    if (diff := schema_mismatch(shard.schema_arrow, readable=True)) is not None:
        raise CorruptShardError(f"{path}: schema differs from the zv-ray dataset schema: {diff}")
    return shard


def valid_shards(path: str | Path, on_corrupt: Literal["fail", "skip"] = "fail") -> list[str]:
    """Shards whose footer and schema check out; corrupt ones raise, or are skipped with a warning."""
    return [shard for shard, _ in shard_sizes(path, on_corrupt)]


def shard_sizes(path: str | Path, on_corrupt: Literal["fail", "skip"] = "fail") -> list[tuple[str, int]]:
    """(shard, objects) of every shard whose footer and schema check out; corrupt ones raise, or are skipped with a
    warning."""
    good = []
    for shard in shard_paths(path):
        try:
            good.append((shard, open_shard(shard).metadata.num_rows))
        except CorruptShardError as err:
            if on_corrupt == "fail":
                raise
            log.warning("skipping corrupt shard: %s", err)
    if not good:
        raise CorruptShardError(f"every shard in {path} is corrupt")
    return good


def read_shards(path: str | Path, on_corrupt: Literal["fail", "skip"] = "fail") -> Iterator[dict[str, Any]]:
    """Decoded records from a shard or folder of shards, one row group at a time.

    Anything corrupt raises CorruptShardError naming the file (and row); with on_corrupt="skip" the rest
    of that shard is skipped with a warning instead."""
    for shard_path in shard_paths(path):
        try:
            yield from _read_shard(shard_path)
        except CorruptShardError as err:
            if on_corrupt == "fail":
                raise
            log.warning("skipping (the rest of) corrupt shard: %s", err)


def _read_shard(path: str) -> Iterator[dict[str, Any]]:
    shard = open_shard(path)
    row = 0
    for group in range(shard.num_row_groups):
        try:
            rows = shard.read_row_group(group).to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise CorruptShardError(f"{path}: row group {group} (rows from {row}) does not read: {err}") from None
        for values in rows:
            try:
                yield row_to_record(values)
            except RecordError as err:
                raise CorruptShardError(f"{path} row {row} (object {values['object_id']}): {err}") from None
            row += 1


class ShardRows:
    """Random access to the objects of a Parquet dataset by index (0 .. total - 1, shards in order), one row group
    read at a time and the last one kept: the training stream visits a dataset's objects in order."""

    def __init__(self, shards: list[tuple[str, int]]):  # (path, rows) per shard
        self.paths = [p for p, _ in shards]
        self.starts = np.cumsum([0] + [n for _, n in shards])
        self._group: tuple[str, int, list[dict[str, Any]]] | None = None
        self._open: tuple[str, pq.ParquetFile, np.ndarray] | None = None

    def record(self, index: int) -> dict[str, Any]:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        path, row = self.paths[shard], index - int(self.starts[shard])
        if self._open is None or self._open[0] != path:
            file = open_shard(path)
            groups = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
            self._open = (path, file, groups)
        _, file, groups = self._open
        group = int(np.searchsorted(groups, row, side="right")) - 1
        if self._group is None or self._group[:2] != (path, group):
            try:
                self._group = (path, group, file.read_row_group(group).to_pylist())
            except (pa.ArrowException, OSError) as err:
                raise CorruptShardError(f"{path}: row group {group} does not read: {err}") from None
        values = self._group[2][row - int(groups[group])]
        try:
            return row_to_record(values)
        except RecordError as err:
            raise CorruptShardError(f"{path} row {row} (object {values['object_id']}): {err}") from None
