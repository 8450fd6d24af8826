"""Sweep config: a base run config, a search space over its dotted keys, a scheduler and a metric.

    zv-ray sweep configs/sweeps/augmentation_tiny.yaml
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from zv_ray.config.base import StrictModel, plain, read_yaml, validate_dict

# Keys the sweep itself sets per trial (run name, storage, MLflow experiment of the parent run).
RESERVED_KEYS = ("cluster.run_name", "cluster.storage_path", "mlflow.")
# The run-config key `seeds: N` varies (a grid dimension of its own).
SEED_KEY = "seed"


class SpaceEntry(StrictModel):
    # grid: every value, crossed with the other grids; choice: one value drawn per sample;
    # uniform / quniform / loguniform: a float in [low, high] (quniform rounds to multiples of q);
    # randint: an integer in [low, high).
    type: Literal["grid", "choice", "uniform", "quniform", "loguniform", "randint"]
    # grid / choice: a list of values, or a mapping label -> {dotted key: value, ...} (a "bundle"
    # that sets several keys at once, e.g. augmentation: {none: {...}, all: {...}}).
    values: list[Any] | dict[str, dict[str, Any]] | None = None
    low: float | None = None
    high: float | None = None
    q: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "SpaceEntry":
        if self.type in ("grid", "choice"):
            if not self.values:
                raise ValueError(f"type {self.type} needs a non-empty `values` list or label mapping")
            if self.low is not None or self.high is not None or self.q is not None:
                raise ValueError(f"type {self.type} takes `values`, not low/high/q")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low/high, not `values`")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"type {self.type} needs low < high, got low={self.low} high={self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if (self.type == "quniform") != (self.q is not None):
            raise ValueError("q is given with quniform and only with quniform")
        if self.type == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"randint needs integer low/high, got {self.low}, {self.high}")
        return self

    @property
    def is_bundle(self) -> bool:
        return isinstance(self.values, dict)


class AshaConfig(StrictModel):
    type: Literal["asha"] = "asha"
    # First rung in steps; None uses the base config's train.eval_every (the metric exists only at evaluations).
    grace_period: int | None = Field(None, ge=1)
    # Keep 1/reduction_factor of trials at each rung.
    reduction_factor: float = Field(2.0, gt=1)
    # Longest a trial may run, in steps; None uses the base config's train.steps.
    max_t: int | None = Field(None, ge=1)
    brackets: int = Field(1, ge=1)


class FifoConfig(StrictModel):
    type: Literal["fifo"]


class SweepConfig(StrictModel):
    # Sweep name: the Tune experiment folder, the MLflow parent run; the same name resumes. No timestamps.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Base run config YAML (relative to the working directory); None starts from the defaults.
    base: str | None = None
    # Dotted key -> value applied to the base before the search space (e.g. train.steps: 2000).
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Dotted run-config key (or bundle label) -> how to sample it.
    space: dict[str, SpaceEntry]
    # Metric reported by the training loop, and whether larger is better.
    metric: str = "val/psnr"
    mode: Literal["max", "min"] = "max"
    # Repeats of the whole grid (random entries are drawn anew for each).
    num_samples: int = Field(1, ge=1)
    # Runs of every arm, each with its own seed (the base's seed + 0 .. seeds - 1: a `seed` grid crossed with the
    # space), so `zv-ray compare` can put intervals on the differences. More than 1 needs grid entries only
    # (an arm must repeat) and the FIFO scheduler (every run to the end).
    seeds: int = Field(1, ge=1)
    # The arm the others are compared with, object by object: space key -> its value (a bundle's label), every
    # key given; None: the first value of every grid entry.
    reference: dict[str, Any] | None = None
    # Trials at once: each holds train workers and generator actors, so size it to the node.
    max_concurrent_trials: int = Field(1, ge=1)
    scheduler: Annotated[AshaConfig | FifoConfig, Field(discriminator="type")] = Field(default_factory=AshaConfig)
    # Where the Tune experiment and the trials' training runs go; None uses the base's cluster.storage_path.
    storage_path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        if not self.space:
            raise ValueError("space is empty: declare at least one key to sweep")
        for key, entry in self.space.items():
            inner = [k for bundle in entry.values.values() for k in bundle] if entry.is_bundle else [key]
            for k in inner:
                if k.startswith(RESERVED_KEYS):
                    raise ValueError(f"space key {k} is set by the sweep itself and cannot be swept")
                if k == SEED_KEY:
                    raise ValueError("space key seed: repeat every arm over seeds with `seeds: N` instead")
            if entry.is_bundle and "." in key:
                raise ValueError(f"space key {key} holds a label mapping: name it without dots (e.g. augmentation)")
        if self.seeds > 1:
            for key, entry in self.space.items():
                if entry.type != "grid":
                    raise ValueError(f"seeds: {self.seeds} repeats every arm, but space.{key} is a {entry.type} entry "
                                     "that draws a new value per trial: make it a grid")
            if self.scheduler.type != "fifo":
                raise ValueError(f"seeds: {self.seeds} compares arms over repeated runs; ASHA would stop some runs "
                                 "early on one noisy evaluation, leaving arms with unequal runs: set "
                                 "scheduler: {type: fifo}")
        if self.reference is not None:
            self._check_reference(self.reference)
        return self

    def _check_reference(self, reference: dict[str, Any]) -> None:
        if set(reference) != set(self.space):
            raise ValueError(f"reference names {sorted(reference)} but the space has {sorted(self.space)}: give a "
                             "value for every space key")
        for key, value in reference.items():
            entry = self.space[key]
            if entry.type != "grid":
                raise ValueError(f"reference.{key}: a {entry.type} entry has no fixed values to refer to")
            if value not in list(entry.values):
                raise ValueError(f"reference.{key}: {value!r} is not one of space.{key}'s values {list(entry.values)}")

    def reference_arm(self) -> dict[str, Any] | None:
        """The reference arm's values: `reference`, else the first value of every grid entry (None when the
        space has a random entry: its trials make no arms)."""
        if self.reference is not None:  # in space order, each value as the grid spells it (4 -> 4.0)
            return {key: next(v for v in entry.values if v == self.reference[key]) for key, entry in self.space.items()}
        if any(entry.type != "grid" for entry in self.space.values()):
            return None
        return {key: next(iter(entry.values)) for key, entry in self.space.items()}


def num_trials(sweep: SweepConfig) -> int:
    """Trials Tune will run: every grid combination and seed, `num_samples` times (other entries sample within each)."""
    grids = [len(entry.values) for entry in sweep.space.values() if entry.type == "grid"]
    return sweep.num_samples * sweep.seeds * math.prod(grids)


def arm_label(values: dict[str, Any]) -> str:
    """An arm's label, as `zv-ray compare` groups trials: "augmentation=all, train.lr=0.001" (values as MLflow
    params spell them)."""
    return ", ".join(f"{k}={plain(v)}" for k, v in values.items())


def load_sweep_config(path: str | Path) -> SweepConfig:
    return validate_dict(SweepConfig, read_yaml(path), source=str(path))
