"""Search space: YAML entries -> Ray Tune sampling objects, and sampled values -> a validated RunConfig."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from zv_ray.config import ConfigError, RunConfig, validate_dict
from zv_ray.config.run import absolute_paths, check_training_views
from zv_ray.config.base import plain, read_yaml, set_keys
from zv_ray.config.sweep import SEED_KEY, SpaceEntry, SweepConfig


def to_tune(entry: SpaceEntry):
    """One entry as a Tune domain; a bundle samples its label."""
    from ray import tune

    values = list(entry.values) if entry.values is not None else None
    match entry.type:
        case "grid":
            return tune.grid_search(values)
        case "choice":
            return tune.choice(values)
        case "uniform":
            return tune.uniform(entry.low, entry.high)
        case "quniform":
            return tune.quniform(entry.low, entry.high, entry.q)
        case "loguniform":
            return tune.loguniform(entry.low, entry.high)
        case "randint":
            return tune.randint(int(entry.low), int(entry.high))
    raise AssertionError(entry.type)


def param_space(sweep: SweepConfig, base_seed: int) -> dict[str, Any]:
    """The space's Tune domains and the seeds every arm runs with (a grid of its own, crossed with the others)."""
    from ray import tune

    seeds = tune.grid_search([base_seed + i for i in range(sweep.seeds)])
    return {**{key: to_tune(entry) for key, entry in sweep.space.items()}, SEED_KEY: seeds}


def base_data(sweep: SweepConfig) -> dict[str, Any]:
    """The base run config as plain data, with the sweep's overrides applied."""
    return set_keys(read_yaml(sweep.base) if sweep.base else {}, sweep.overrides)


def trial_values(sweep: SweepConfig, sampled: dict[str, Any]) -> dict[str, Any]:
    """Sampled Tune config -> dotted run-config keys and values (bundles expanded)."""
    out: dict[str, Any] = {}
    for key, entry in sweep.space.items():
        if key not in sampled:
            raise ConfigError(f"trial config lacks space key {key} (was the sweep file changed before --resume?)")
        if entry.is_bundle:
            out.update(entry.values[sampled[key]])
        else:
            out[key] = sampled[key]
    if SEED_KEY in sampled:  # absent in validate_space's representatives: the base's seed
        out[SEED_KEY] = sampled[SEED_KEY]
    return out


def trial_config(sweep: SweepConfig, base: dict[str, Any], sampled: dict[str, Any], run_name: str,
                 root: str | Path) -> RunConfig:
    """A trial's run config; relative local paths are made absolute against `root`, the folder the sweep was started
    in (as `base:` is): Tune runs each trial function, and Ray Train each worker, in a folder of its own."""
    data = set_keys(base, {**trial_values(sweep, sampled), "cluster.run_name": run_name})
    label = ", ".join(f"{k}={json.dumps(plain(v))}" for k, v in sampled.items())
    cfg = absolute_paths(validate_dict(RunConfig, data, source=f"{sweep.name} trial ({label})"), root)
    check_training_views(cfg)  # every trial trains
    return cfg


def representatives(entry: SpaceEntry) -> list[Any]:
    """Values that bound what an entry can sample: every grid/choice value, the ends of a range."""
    if entry.values is not None:
        return list(entry.values)
    if entry.type == "randint":
        return [int(entry.low), int(entry.high) - 1]
    return [entry.low, entry.high]


def validate_space(sweep: SweepConfig, base: dict[str, Any]) -> list[RunConfig]:
    """Every combination of representative values as a validated RunConfig: a wrong key or an
    out-of-range value is a ConfigError naming it, before Ray starts."""
    keys = list(sweep.space)
    combos = itertools.product(*(representatives(sweep.space[k]) for k in keys))
    return [trial_config(sweep, base, dict(zip(keys, combo)), sweep.name, Path.cwd()) for combo in combos]
