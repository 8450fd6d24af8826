"""Optimization, sampling, checkpointing, cluster and tracking settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel


class TrainConfig(StrictModel):
    # Optimizer steps in this stage.
    steps: int = Field(80_000, ge=1)
    # Stop this invocation after this many steps (the schedule still spans `steps`); resume later with --resume.
    stop_after: int | None = Field(None, ge=1)
    # Samples per optimizer step over all workers (GS-LRM: 512), whatever the worker count: each worker takes
    # global_batch_size / workers of them, in micro-batches of at most micro_batch_size (gradient accumulation).
    global_batch_size: int = Field(8, ge=1)
    # The most samples one worker puts through the model at once (GPU memory); a worker's share is split into
    # the fewest equal micro-batches that fit (zv_ray.data.plan.micro_batches).
    micro_batch_size: int = Field(8, ge=1)
    # Square resolution the model sees (renders are resized to it when they differ).
    resolution: int = Field(256, ge=8)
    # Input views and extra supervision views per object (GS-LRM: 4 + 4; inputs are supervised too).
    num_input_views: int = Field(4, ge=1)
    num_target_views: int = Field(4, ge=0)
    # How the inputs are drawn: "random" (GS-LRM) uniformly, "spread" the first at random and each next
    # one farthest from those so far (the way the evaluation protocol surrounds the object).
    input_views: Literal["random", "spread"] = "random"
    # How the target views are drawn: "near_input" (GS-LRM) from views whose direction is within
    # target_max_angle_deg of some input (topped up with the nearest others), "uniform" from all the rest.
    target_views: Literal["near_input", "uniform"] = "near_input"
    target_max_angle_deg: float = Field(60.0, gt=0, le=180)
    # AdamW (GS-LRM: lr 4e-4 at 256 px, betas 0.9/0.95, weight decay 0.05).
    lr: float = Field(4e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.05, ge=0)
    # Linear warm-up then cosine decay to min_lr.
    warmup_steps: int = Field(2000, ge=0)
    min_lr: float = Field(0.0, ge=0)
    # Gradient clipping norm (0 disables) and the skip threshold: a step whose norm is non-finite or
    # above skip_grad_norm is skipped (GS-LRM: 20 x clip). null never skips a finite step; a non-finite one is
    # still skipped (applied, it would turn every weight to NaN), so with max_consecutive_skips 1 the first one
    # ends the run as diverged: grad_clip 0 + skip_grad_norm null + max_consecutive_skips 1 is training
    # without safeguards.
    grad_clip: float = Field(1.0, ge=0)
    skip_grad_norm: float | None = Field(20.0, gt=0)
    # A run is declared diverged after this many skipped steps in a row.
    max_consecutive_skips: int = Field(50, ge=1)
    # Checkpoint, log and evaluation intervals in steps.
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(10, ge=1)
    image_every: int = Field(1000, ge=1)
    eval_every: int = Field(5000, ge=1)
    # Real objects scored during training at every eval (e.g. ../shared/eval/gso); None: held-out Zeroverse only.
    eval_objects: str | None = None
    # How many of those objects, and how many held-out test views each (rendered once at start-up).
    eval_max_objects: int = Field(2, ge=1)
    eval_test_views: int = Field(8, ge=1)
    # Initialize from a checkpoint (weights only): a resolution change (256 -> 512 finetune) restarts the schedule.
    init_from: str | None = None
    # Keep the samples each worker trained on, a line per step, in <run>/consumed_ids/rank<r>.jsonl (local
    # storage), for `zv-ray audit`. Off by default: it grows with the run.
    audit_consumed_ids: bool = False
    # Background colour for splatting and compositing (white, like the renders).
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        return self


class ClusterConfig(StrictModel):
    # Ray address: None starts (or joins, under `ray job submit`) the local/current cluster.
    ray_address: str | None = None
    # Logical CPUs declared for a local Ray (more than cores, so data actors and train workers both fit).
    local_num_cpus: int = Field(4, ge=1)
    # Ray Train workers: a count, or [min, max] for elastic training (Ray Train starts with what fits, grows as
    # nodes join, shrinks when one is lost, restoring the latest checkpoint; the global batch and the data
    # order stay the same, zv_ray.data.plan). GPUs and CPUs per worker.
    num_workers: int | tuple[int, int] = 1
    # How often an elastic run checks whether more workers fit (Ray Train's elastic_resize_monitor_interval_s).
    elastic_resize_interval_s: float = Field(60.0, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    # Optional custom resource each train worker requests (e.g. "trainer"), to pin workers to GPU nodes.
    worker_resource: str | None = None
    # Where runs, checkpoints and artifacts go (local path, or s3:// / gs:// on a cluster).
    storage_path: str = "outputs/runs"
    # Run name; the same storage_path + name resumes. No timestamps: a resumed run must find itself.
    run_name: str = "zv-ray"
    # Automatic restarts after a worker failure (Ray Train FailureConfig).
    max_failures: int = Field(2, ge=-1)
    # Restarts of the whole fit when Ray Train's controller fails on storage (an S3 outage while it records a
    # checkpoint, which Ray Train does not retry), from the last checkpoint it registered, this far apart.
    storage_retries: int = Field(5, ge=0)
    storage_retry_wait_s: float = Field(30.0, ge=0)
    # Checkpoints kept.
    num_checkpoints_to_keep: int = Field(2, ge=1)
    # Show Ray's own output (worker stdout, Ray Data/Train/Tune logs) on the console; off, it stays in Ray's
    # session log folder and the console shows one progress display and a summary (`--verbose` sets it).
    verbose: bool = False

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        low, high = self.worker_range
        if not 1 <= low <= high:
            raise ValueError(f"cluster.num_workers {self.num_workers}: need 1 <= min <= max, e.g. [1, 2]")
        return self

    @property
    def worker_range(self) -> tuple[int, int]:
        """(min, max) workers; equal for a fixed count."""
        n = self.num_workers
        return (n, n) if isinstance(n, int) else n


class MlflowConfig(StrictModel):
    # Tracking URI; None uses $MLFLOW_TRACKING_URI or sqlite:///<storage_path>/mlflow.db.
    tracking_uri: str | None = None
    # MLflow experiment the runs are grouped under.
    experiment: str = "zv-ray"
