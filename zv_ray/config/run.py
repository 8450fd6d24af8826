"""The top-level run config: one YAML file describes a whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from zv_ray.config.base import ConfigError, StrictModel, apply_overrides, read_yaml, validate_dict
from zv_ray.config.data import DataConfig
from zv_ray.config.model import LossConfig, ModelConfig
from zv_ray.config.render import RenderConfig
from zv_ray.config.train import ClusterConfig, MlflowConfig, TrainConfig
from zv_ray.config.zeroverse import ZeroverseConfig


class RunConfig(StrictModel):
    # Global seed: every object is a pure function of (seed, object id, zeroverse config).
    seed: int = Field(0, ge=0)
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
        return self


def check_training_views(cfg: RunConfig) -> None:
    """Training needs input + supervision views per object; other commands (dataset, generate) do not."""
    views = cfg.train.num_input_views + cfg.train.num_target_views
    if views > cfg.render.num_views:
        raise ConfigError(
            f"train.num_input_views + train.num_target_views = {views} exceeds render.num_views = "
            f"{cfg.render.num_views}; render more views or supervise fewer"
        )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (or defaults) + 'section.key=value' overrides -> validated RunConfig."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return validate_dict(RunConfig, data, source=str(path) if path else "<defaults>")
