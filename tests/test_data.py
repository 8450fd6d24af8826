"""Arrow schema and Parquet shards: lossless round trips, atomic writes, corrupt files named."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from zv_ray.config import RenderConfig
from zv_ray.data.parquet import CorruptShardError, read_shards, valid_shards, write_shard
from zv_ray.data.schema import SCHEMA, records_to_table
from zv_ray.render.cameras import sample_cameras


def fake_record(object_id: int, views: int = 3, size: int = 16) -> dict:
    rng = np.random.default_rng(object_id)
    intrinsics, c2w = sample_cameras(rng, RenderConfig(num_views=views, resolution=size))
    return {
        "object_id": np.int64(object_id),
        "seed": np.int64(7),
        "config_hash": "0123456789abcdef",
        "params_json": f'{{"parts": {object_id % 9 + 1}}}',
        "rgba": rng.integers(0, 256, (views, size, size, 4), dtype=np.uint8),
        "intrinsics": intrinsics,
        "c2w": c2w,
    }


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_shard_round_trip_is_lossless(tmp_path, image_format):
    records = [fake_record(i) for i in (5, 3, 9)]
    path = Path(write_shard(records_to_table(records, image_format), tmp_path))
    assert path.name == "shard-000000000003.parquet"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert pq.read_schema(path).equals(SCHEMA, check_metadata=False)
    assert pq.read_schema(path).metadata[b"zv_ray.schema_version"] == b"2"
    table = pq.read_table(path)
    assert table.column("image_format").to_pylist() == [image_format] * 3
    assert table.column("num_views").to_pylist() == [3, 3, 3]
    back = list(read_shards(tmp_path))
    assert [r["object_id"] for r in back] == [5, 3, 9]
    for want, got in zip(records, back):
        np.testing.assert_array_equal(got["rgba"], want["rgba"])
        np.testing.assert_array_equal(got["intrinsics"], want["intrinsics"])
        np.testing.assert_array_equal(got["c2w"], want["c2w"])
        assert got["params_json"] == want["params_json"] and got["seed"] == 7


def test_png_views_open_in_any_image_reader(tmp_path):
    path = Path(write_shard(records_to_table([fake_record(1)], "png"), tmp_path))
    blob = pq.read_table(path).column("views")[0][0].as_py()
    img = Image.open(io.BytesIO(blob))
    assert img.mode == "RGBA" and img.size == (16, 16)


def test_a_write_that_dies_halfway_leaves_the_old_shard_and_no_debris(tmp_path, monkeypatch):
    """A retried writer replaces its own shard (same smallest id, same name). If it dies halfway (disk full),
    readers see the previous shard, during the write and after; the half-written temp file is removed."""
    final = Path(write_shard(records_to_table([fake_record(3)], "png"), tmp_path))
    old = final.read_bytes()
    real_write = pq.write_table

    def dies_halfway(table, where, **kw):
        buffer = pa.BufferOutputStream()
        real_write(table, buffer, **kw)
        data = buffer.getvalue().to_pybytes()
        Path(where).write_bytes(data[: len(data) // 2])
        assert final.read_bytes() == old and [r["object_id"] for r in read_shards(tmp_path)] == [3]  # mid-write
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        write_shard(records_to_table([fake_record(3), fake_record(4)], "png"), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert final.read_bytes() == old
    assert [r["object_id"] for r in read_shards(tmp_path)] == [3]


def test_truncated_shard_is_named(tmp_path, caplog):
    good = Path(write_shard(records_to_table([fake_record(0)], "png"), tmp_path))
    bad = Path(write_shard(records_to_table([fake_record(1)], "png"), tmp_path))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match=bad.name) as err:
        list(read_shards(tmp_path))
    assert "truncated" in str(err.value) and "on_corrupt=skip" in str(err.value)
    with pytest.raises(CorruptShardError, match=bad.name):
        valid_shards(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert [r["object_id"] for r in read_shards(tmp_path, on_corrupt="skip")] == [0]
        assert valid_shards(tmp_path, on_corrupt="skip") == [str(good)]
    assert bad.name in caplog.text


def test_damaged_view_names_file_and_row(tmp_path):
    table = records_to_table([fake_record(4), fake_record(8)], "png")
    views = table.column("views").to_pylist()
    views[1][2] = views[1][2][:40]  # object 8's third PNG cut short
    field = SCHEMA.field("views")
    table = table.set_column(table.schema.get_field_index("views"), field, pa.array(views, field.type))
    path = Path(write_shard(table, tmp_path))
    with pytest.raises(CorruptShardError, match=rf"{path.name} row 1 \(object 8\).*PNG"):
        list(read_shards(path))


def test_wrong_schema_is_refused(tmp_path):
    pq.write_table(pa.table({"object_id": [1]}), tmp_path / "shard-x.parquet")
    with pytest.raises(CorruptShardError, match=r"shard-x.parquet: schema differs.*missing"):
        valid_shards(tmp_path)
    with pytest.raises(ValueError, match="schema"):
        write_shard(pa.table({"object_id": [1]}), tmp_path)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .parquet shards"):
        list(read_shards(tmp_path))
