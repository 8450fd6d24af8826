"""Where training objects come from and how Ray Data produces them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel


class DataConfig(StrictModel):
    # "online": generator+renderer actors stream objects straight into training; "parquet": read shards.
    source: Literal["online", "parquet"] = "online"
    # Folder of Parquet shards written by `zv-ray dataset` (source == "parquet").
    parquet_path: str | None = None
    # Objects in one epoch of the online stream (ids first_object_id .. first_object_id + num_objects - 1).
    num_objects: int = Field(1024, ge=1)
    # First object id; the held-out validation set uses ids disjoint from training.
    first_object_id: int = Field(0, ge=0)
    # Validation objects (ids start at val_first_object_id).
    num_val_objects: int = Field(8, ge=0)
    val_first_object_id: int = Field(1_000_000_000, ge=0)
    # Generator+renderer actors (Ray Data map_batches concurrency) and their resources.
    num_generator_actors: int = Field(2, ge=1)
    generator_num_cpus: float = Field(1.0, ge=0)
    generator_num_gpus: float = Field(0.0, ge=0)
    # Optional custom resource each generator actor requests, to pin actors to node types (e.g. "render").
    generator_resource: str | None = None
    # Stored image encoding for Parquet shards.
    image_format: Literal["png", "raw"] = "png"
    # zlib level of stored PNGs: 1 encodes a 512 px view ~4x faster than 6 for ~20% more bytes.
    png_compress_level: int = Field(1, ge=0, le=9)
    # Objects per Parquet shard, at most (~80 MB of PNG at 32 x 512 px; a writer holds one shard in memory).
    objects_per_shard: int = Field(16, ge=1)
    # Corrupt Parquet shards: "fail" stops with the file named; "skip" skips it and says so.
    on_corrupt: Literal["fail", "skip"] = "fail"

    @model_validator(mode="after")
    def _parquet_path_needed(self) -> "DataConfig":
        if self.source == "parquet" and not self.parquet_path:
            raise ValueError("data.source is 'parquet' but data.parquet_path is not set; point it at `zv-ray dataset` output")
        return self
