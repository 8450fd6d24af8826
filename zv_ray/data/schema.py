"""The Arrow schema of a rendered-object record, and the conversions between records and rows.

One row per object; see docs/data.md. A record (what render_object returns) holds numpy arrays:
rgba [V, H, W, 4] uint8, intrinsics [V, 4] float32, c2w [V, 4, 4] float32 (OpenCV camera-to-world).

Version 2 added `source`. Version 1 shards (written before it) still read: their rows are Zeroverse objects.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from PIL import Image

ImageFormat = Literal["png", "raw"]
SCHEMA_VERSION = "2"
# The `source` of a generated object; real ones are "mesh:<path>" or "rendered:<folder>" (zv_ray.data.records).
ZEROVERSE_SOURCE = "zeroverse"

SCHEMA = pa.schema(
    [
        pa.field("object_id", pa.int64(), nullable=False),
        # Where the object comes from: "zeroverse", "mesh:<file relative to --meshes>" or "rendered:<folder>".
        pa.field("source", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        # Hash of the generator + render settings that decide the pixels.
        pa.field("config_hash", pa.string(), nullable=False),
        # The generator's sampled parameters for this object, as JSON.
        pa.field("params_json", pa.string(), nullable=False),
        # "png": each view is an RGBA PNG; "raw": each view is H * W * 4 uint8 bytes, row-major.
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("num_views", pa.int32(), nullable=False),
        # [V] encoded views, RGB composited on white + coverage alpha. large_binary: raw shards pass 2 GiB.
        pa.field("views", pa.list_(pa.large_binary()), nullable=False),
        # [V][4] fx, fy, cx, cy in pixels, pixel centres at +0.5.
        pa.field("intrinsics", pa.list_(pa.list_(pa.float32(), 4)), nullable=False),
        # [V][16] OpenCV camera-to-world 4x4, row-major (x right, y down, z forward; world +Z up).
        pa.field("c2w", pa.list_(pa.list_(pa.float32(), 16)), nullable=False),
    ],
    metadata={"zv_ray.schema_version": SCHEMA_VERSION},
)
# Version 1: every column but `source`.
SCHEMA_V1 = SCHEMA.remove(SCHEMA.get_field_index("source")).with_metadata({"zv_ray.schema_version": "1"})
# Beside the schema's columns in a render or import batch: why an input was skipped, null for a row that rendered.
# A skipped input travels as a row without views, so every batch has one schema; the shard writer drops it.
SKIPPED = "skipped"


class RecordError(ValueError):
    """A row whose content does not decode to a valid record."""


def encode_view(rgba: np.ndarray, image_format: ImageFormat, png_level: int) -> bytes:  # rgba [H, W, 4] uint8
    if image_format == "raw":
        return np.ascontiguousarray(rgba).tobytes()
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", compress_level=png_level)
    return buf.getvalue()


def decode_view(data: bytes, image_format: str, height: int, width: int) -> np.ndarray:
    """Encoded view -> [H, W, 4] uint8; RecordError when it does not decode to that shape."""
    if image_format == "raw":
        if len(data) != height * width * 4:
            raise RecordError(f"raw view has {len(data)} bytes, expected {height} * {width} * 4")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)
    if image_format != "png":
        raise RecordError(f"unknown image_format {image_format!r} (expected 'png' or 'raw')")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, arr = img.mode, np.asarray(img)
    except Exception as err:  # PIL raises many types for damaged data
        raise RecordError(f"view is not a readable PNG ({type(err).__name__}: {err})") from None
    if mode != "RGBA" or arr.shape != (height, width, 4):
        raise RecordError(f"view PNG is {mode} {arr.shape}, expected RGBA ({height}, {width}, 4)")
    return arr


def records_to_table(records: list[dict[str, Any]], image_format: ImageFormat, png_level: int = 1,
                     skipped: list[str | None] | None = None) -> pa.Table:
    """render_object records -> a table with SCHEMA (images encoded here), plus the SKIPPED column when given
    (one reason or None per record). A record without "source" is a Zeroverse object."""
    rows = []
    for rec in records:
        rgba = rec["rgba"]
        views, height, width, _ = rgba.shape
        rows.append(
            {
                "object_id": int(rec["object_id"]),
                "source": rec.get("source", ZEROVERSE_SOURCE),
                "seed": int(rec["seed"]),
                "config_hash": rec["config_hash"],
                "params_json": rec["params_json"],
                "image_format": image_format,
                "height": height,
                "width": width,
                "num_views": views,
                "views": [encode_view(v, image_format, png_level) for v in rgba],
                "intrinsics": np.asarray(rec["intrinsics"], dtype=np.float32).reshape(views, 4).tolist(),
                "c2w": np.asarray(rec["c2w"], dtype=np.float32).reshape(views, 16).tolist(),
            }
        )
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return table if skipped is None else table.append_column(SKIPPED, pa.array(skipped, pa.string()))


def row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row (as from Table.to_pylist) -> record with numpy arrays; RecordError names what is wrong."""
    views, height, width = row["num_views"], row["height"], row["width"]
    for key, want in (("views", views), ("intrinsics", views), ("c2w", views)):
        if len(row[key]) != want:
            raise RecordError(f"{key} has {len(row[key])} entries but num_views is {views}")
    rgba = np.stack([decode_view(v, row["image_format"], height, width) for v in row["views"]])
    return {
        "object_id": row["object_id"],
        "source": row.get("source", ZEROVERSE_SOURCE),  # version 1 rows are all Zeroverse
        "seed": row["seed"],
        "config_hash": row["config_hash"],
        "params_json": row["params_json"],
        "rgba": rgba,  # [V, H, W, 4]
        "intrinsics": np.asarray(row["intrinsics"], dtype=np.float32),  # [V, 4]
        "c2w": np.asarray(row["c2w"], dtype=np.float32).reshape(views, 4, 4),  # [V, 4, 4]
    }


def schema_mismatch(schema: pa.Schema, readable: bool = False) -> str | None:
    """None when `schema` has SCHEMA's fields and types (metadata aside), else what differs. `readable`: version 1
    (SCHEMA_V1, no `source`) is accepted too, for readers."""
    if schema.equals(SCHEMA, check_metadata=False) or (readable and schema.equals(SCHEMA_V1, check_metadata=False)):
        return None
    want = {f.name: f.type for f in SCHEMA}
    got = {f.name: f.type for f in schema}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    retyped = sorted(f"{k} ({got[k]} != {want[k]})" for k in set(want) & set(got) if got[k] != want[k])
    parts = [f"missing {missing}"] if missing else []
    parts += [f"unexpected {extra}"] if extra else []
    parts += [f"types {retyped}"] if retyped else []
    return "; ".join(parts) or "field order or nullability differs"
