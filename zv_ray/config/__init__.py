"""Typed, validated configs loaded from YAML. One model per concern; RunConfig holds them all."""

from zv_ray.config.base import ConfigError, config_hash, flatten, validate_dict
from zv_ray.config.data import DataConfig
from zv_ray.config.model import LossConfig, ModelConfig
from zv_ray.config.render import RenderConfig
from zv_ray.config.run import RunConfig, load_config
from zv_ray.config.train import ClusterConfig, MlflowConfig, TrainConfig
from zv_ray.config.zeroverse import ZeroverseConfig

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "MlflowConfig",
    "ModelConfig",
    "RenderConfig",
    "RunConfig",
    "TrainConfig",
    "ZeroverseConfig",
    "config_hash",
    "flatten",
    "load_config",
    "validate_dict",
]
