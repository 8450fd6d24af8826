"""The top-level run config: one YAML file describes a whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from zv_ray.config.base import ConfigError, StrictModel, apply_overrides, flatten, read_yaml, set_keys, validate_dict
from zv_ray.config.data import DataConfig
from zv_ray.config.model import LossConfig, ModelConfig
from zv_ray.config.render import RenderConfig
from zv_ray.config.train import ClusterConfig, MlflowConfig, TrainConfig
from zv_ray.config.zeroverse import ZeroverseConfig


# Every step-based field of every section: `step_scale` multiplies them together (gsplat's adjust_steps).
STEP_FIELDS = ("train.steps", "train.stop_after", "train.warmup_steps", "train.checkpoint_every", "train.log_every",
               "train.image_every", "train.eval_every", "loss.perceptual_start_step")


class RunConfig(StrictModel):
    # Global seed: every object is a pure function of (seed, object id, zeroverse config).
    seed: int = Field(0, ge=0)
    # Multiplies every step-based field (train.steps, stop_after, warmup and every interval, loss.perceptual_start_step)
    # when the config is loaded, so a run is shortened or lengthened in one knob; the loaded config then reads 1.
    step_scale: float = Field(1.0, gt=0)
    zeroverse: ZeroverseConfig = Field(default_factory=ZeroverseConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.train.resolution % self.model.patch_size:
            raise ValueError(
                f"train.resolution {self.train.resolution} must be a multiple of model.patch_size {self.model.patch_size}"
            )
        batch, (low, high) = self.train.global_batch_size, self.cluster.worker_range
        if odd := [n for n in range(low, high + 1) if batch % n]:
            fits = [b for b in range(batch, batch * high + 1) if all(b % n == 0 for n in range(low, high + 1))][0]
            raise ValueError(
                f"train.global_batch_size {batch} does not split evenly over {odd[0]} workers (cluster.num_workers "
                f"{self.cluster.num_workers}): every worker takes the same share; use a multiple of every worker "
                f"count the run may have, e.g. train.global_batch_size={fits}"
            )
        return self


# Local files and folders a run reads, besides data.sources paths. Relative ones are made absolute against the
# folder the command runs in (absolute_paths): Ray Train runs each worker, and Tune each trial, in a folder of its own.
LOCAL_PATH_KEYS = ("train.eval_objects", "train.init_from", "loss.vgg_weights", "loss.vgg19_weights")


def absolute_paths(cfg: RunConfig, root: str | Path) -> RunConfig:
    """`cfg` with every relative local path (LOCAL_PATH_KEYS, data.sources paths) made absolute against `root`."""
    flat = flatten(cfg)
    keys = [*LOCAL_PATH_KEYS, *(f"data.sources.{i}.path" for i in range(len(cfg.data.sources)))]
    paths = {k: str((Path(root) / flat[k]).resolve()) for k in keys
             if isinstance(flat.get(k), str) and "://" not in flat[k] and not Path(flat[k]).is_absolute()}
    return validate_dict(RunConfig, set_keys(cfg.model_dump(mode="json"), paths), source="<absolute paths>") if paths else cfg


def check_training_views(cfg: RunConfig) -> None:
    """Training needs input + supervision views per object; other commands (dataset, generate) do not."""
    views = cfg.train.num_input_views + cfg.train.num_target_views
    if views > cfg.render.num_views:
        raise ConfigError(
            f"train.num_input_views + train.num_target_views = {views} exceeds render.num_views = "
            f"{cfg.render.num_views}; render more views or supervise fewer"
        )


def scale_steps(cfg: RunConfig) -> RunConfig:
    """`cfg` with every STEP_FIELDS value multiplied by cfg.step_scale (intervals at least 1), step_scale reset to 1."""
    if cfg.step_scale == 1:
        return cfg
    flat = flatten(cfg)
    floor = {"train.warmup_steps": 0, "loss.perceptual_start_step": 0}
    scaled = {k: max(floor.get(k, 1), round(flat[k] * cfg.step_scale)) for k in STEP_FIELDS if flat[k] is not None}
    data = set_keys(cfg.model_dump(mode="json"), {**scaled, "step_scale": 1.0})
    return validate_dict(RunConfig, data, source=f"step_scale={cfg.step_scale}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (or defaults) + 'section.key=value' overrides -> validated RunConfig (steps scaled by step_scale)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return scale_steps(validate_dict(RunConfig, data, source=str(path) if path else "<defaults>"))
