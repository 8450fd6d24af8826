"""Where training objects come from and how Ray Data produces them."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel
from zv_ray.config.zeroverse import ZeroverseConfig


class DataSource(StrictModel):
    # "zeroverse": objects generated and rendered by the actors as training consumes them (data.num_objects of
    # them, ids from data.first_object_id); "parquet": the objects of a `zv-ray dataset` folder (Zeroverse, meshes
    # or imported renders), local or s3:// / gs://.
    kind: Literal["zeroverse", "parquet"]
    # The Parquet folder (kind "parquet" only).
    path: str | None = None
    # Relative weight: each unit of samples comes from this source with probability weight / sum of weights.
    weight: float = Field(1.0, ge=0)
    # Its name in metrics (data/share/<name>); None: "zeroverse", or the Parquet folder's last part.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> "DataSource":
        if self.kind == "parquet" and not self.path:
            raise ValueError("a parquet source needs a path: point it at `zv-ray dataset` output")
        if self.kind == "zeroverse" and self.path:
            raise ValueError(f"a zeroverse source takes no path (got {self.path!r}); did you mean kind: parquet?")
        return self

    @property
    def label(self) -> str:
        return self.name or ("zeroverse" if self.kind == "zeroverse" else PurePosixPath(self.path.rstrip("/")).name)


class DataConfig(StrictModel):
    # Where training samples come from, mixed by weight (zv_ray.data.plan): e.g. Zeroverse alone (the default), a
    # Parquet dataset alone, or [{kind: zeroverse, weight: 1}, {kind: parquet, path: s3://b/gso, weight: 1}].
    sources: list[DataSource] = Field(default_factory=lambda: [DataSource(kind="zeroverse")], min_length=1)
    # Objects of the zeroverse source (ids first_object_id .. first_object_id + num_objects - 1), each visited
    # once per view pass.
    num_objects: int = Field(1024, ge=1)
    # Training samples each online object serves: k different view subsets of its render.num_views cameras,
    # rendered at train.resolution (each view once), so generation and rendering are amortized over k
    # samples. 8: 0.14 core-s per 8 x 256 px sample vs 0.51 at k = 1 (benchmarks/render.py, docs/scaling.md).
    samples_per_object: int = Field(8, ge=1)
    # Samples of each slot of the global batch shuffled together (a multiple of samples_per_object), so an
    # object's k samples spread over `shuffle_window` steps; deterministic (zv_ray.data.plan). Host memory per
    # worker: its slots (global_batch_size / workers) x the window x one sample (8 x 256^2 x 3 bytes = 1.5 MB).
    shuffle_window: int = Field(64, ge=1)
    # Units (an object's k samples) each train worker's stream renders or reads ahead of the one it needs.
    prefetch_batches: int = Field(2, ge=1)
    # A train worker whose stream yields nothing for this long fails with one clear error (its actors cannot run:
    # lost render nodes that did not come back) instead of waiting forever; long enough for an autoscaler to start
    # a node. Ray Train's FailureConfig then restarts the run, which waits for capacity again.
    stall_timeout_s: float = Field(900.0, gt=0)
    # Render every object of every source once (view pass 0) before training and keep its samples in Ray's
    # object store, revisited every pass (small fixed sets: the actors leave before the workers train); off,
    # the actors render each visit's new view subsets as training consumes them.
    materialize: bool = False
    # First object id; the held-out validation set uses ids disjoint from training.
    first_object_id: int = Field(0, ge=0)
    # Validation objects (ids start at val_first_object_id), rendered once under the evaluation protocol and
    # scored like `zv-ray eval --zeroverse N` (val/psnr, val/white_psnr, ...).
    num_val_objects: int = Field(8, ge=0)
    val_first_object_id: int = Field(1_000_000_000, ge=0)
    # The validation objects' own generator settings (the official ones by default): a sweep varies
    # `zeroverse.*`, never these, so every trial and arm is ranked on the same objects.
    val_zeroverse: ZeroverseConfig = Field(default_factory=ZeroverseConfig)
    # Generator+renderer actors (Ray Data map_batches concurrency) and their resources.
    num_generator_actors: int = Field(2, ge=1)
    generator_num_cpus: float = Field(1.0, ge=0)
    generator_num_gpus: float = Field(0.0, ge=0)
    # Ray memory request per generator actor in MB, so the scheduler packs only as many as fit; None:
    # estimated from the render settings (zv_ray.pipeline.generator_memory_bytes, measured).
    generator_memory_mb: int | None = Field(None, ge=1)
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
    def _check(self) -> "DataConfig":
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("data.sources weights sum to 0: give at least one source a positive weight")
        if sum(s.kind == "zeroverse" for s in self.sources) > 1:
            raise ValueError("data.sources lists the zeroverse source twice: list it once (data.num_objects sets its size)")
        labels = [s.label for s in self.sources]
        if len(set(labels)) < len(labels):
            raise ValueError(f"data.sources names {labels} repeat: give each source its own `name`")
        if self.shuffle_window % self.samples_per_object:
            raise ValueError(f"data.shuffle_window {self.shuffle_window} must be a multiple of data.samples_per_object "
                             f"{self.samples_per_object} (whole objects are shuffled)")
        return self
