"""Ray Tune sweeps: one trial = one TorchTrainer run = one MLflow child run of the sweep's parent run.

    zv-ray sweep configs/sweeps/augmentation_tiny.yaml            # local Ray on CPU, minutes
    zv-ray sweep configs/sweeps/augmentation_tiny.yaml --resume   # finish an interrupted sweep
    ray job submit --working-dir . -- zv-ray sweep configs/sweeps/augmentation.yaml   # one GPU node

Train V2 style: each trial is a function that builds the TorchTrainer and reports back through
TuneReportCallback (`Tuner(trainer)` fails in Ray 2.60). The Tune experiment is
<storage>/<sweep name>; each trial's training run is <storage>/<sweep name>/train/<sweep>-<trial id>,
so a restored trial resumes its training run from its own checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from ray import tune

from zv_ray.config import ConfigError, RunConfig, validate_dict
from zv_ray.config.base import set_keys
from zv_ray.config.sweep import SweepConfig, arm_label, num_trials
from zv_ray.train.schedule import last_step
from zv_ray.tracking import (
    DONE_OUTCOMES, METRIC_TAG, MODE_TAG, OUTCOME_TAG, PARAM_PREFIX, REFERENCE_TAG, ROLE_TAG, SEED_TAG, SPACE_TAG,
    SWEEP_TAG, TRIAL_TAG, child_runs, end_trial_run,
)
from zv_ray.tune.space import base_data, param_space, trial_config, validate_space

# One line per finished trial, the sweep's progress display. A logger, not a console held by the callback: Tune
# pickles its run config (callbacks included) into the experiment state, and a rich Console holds a lock.
progress_log = logging.getLogger("zv_ray.sweep.progress")


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled values (shipped once via tune.with_parameters)."""

    sweep: SweepConfig
    base: dict[str, Any]
    tracking_uri: str
    parent_run_id: str
    experiment_id: str
    train_storage: str  # folder holding every trial's training run
    root: str  # the folder the sweep was started in: relative paths are relative to it

    def run_name(self, trial_id: str) -> str:
        # Stable across Tuner.restore (Tune keeps trial ids): the MLflow run and training run find themselves.
        return f"{self.sweep.name}-{trial_id}"

    def trial_config(self, sampled: dict[str, Any], trial_id: str) -> RunConfig:
        return trial_config(self.sweep, self.base, sampled, self.run_name(trial_id), self.root)


@dataclass
class SweepOutcome:
    parent_run_id: str
    tracking_uri: str
    experiment_path: str
    num_trials: int
    interrupted: bool


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """One Tune trial: its MLflow child run (found again on restore), then its TorchTrainer."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from zv_ray.tracking import log_params, start_run
    from zv_ray.train.trainer import build_trainer
    from zv_ray.tune.release import ReleasePlacementGroupOnKill

    trial_id = tune.get_context().get_trial_id()
    cfg = ctx.trial_config(config, trial_id)
    tags = {"mlflow.parentRunId": ctx.parent_run_id, SWEEP_TAG: ctx.sweep.name, ROLE_TAG: "trial", TRIAL_TAG: trial_id,
            SEED_TAG: str(cfg.seed)}
    run_id = start_run(ctx.tracking_uri, cfg, resume=True, tags=tags)
    log_params(ctx.tracking_uri, run_id, {f"{PARAM_PREFIX}{k}": v for k, v in config.items()})
    trainer = build_trainer(
        cfg, tracking_uri=ctx.tracking_uri, mlflow_run_id=run_id, storage_path=ctx.train_storage,
        callbacks=[TuneReportCallback(), ReleasePlacementGroupOnKill()],
    )
    trainer.fit()


def is_diverged(result: dict[str, Any]) -> bool:
    """The loop's verdict (train.max_consecutive_skips skipped steps in a row; it then stops itself) or a
    non-finite last reported loss. No Tune stopper ends such trials early: a killed trial's Train run
    cannot shut down cleanly, and the loop already stops a diverging run on its own."""
    loss = result.get("train/loss")
    return result.get("diverged", 0.0) >= 1 or (loss is not None and not math.isfinite(loss))


class SweepTracker(tune.Callback):
    """Driver side: gives each trial's MLflow run a terminal status and an outcome tag, whatever ended it
    (the loop finishing or diverging, ASHA stopping it, an error, an interrupted sweep)."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.done = 0

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        target = last_step(self.ctx.trial_config(trial.config, trial.trial_id).train)
        if is_diverged(result):
            outcome = "diverged"
        elif result.get("step", 0) < target:
            outcome = "stopped"
        else:
            outcome = "completed"
        self._end(trial.trial_id, "FINISHED", outcome, diverged=outcome == "diverged")
        self._show(trials, trial, outcome)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial.trial_id, "FAILED", "failed", diverged=is_diverged(trial.last_result or {}))
        self._show(trials, trial, "failed")

    def _show(self, trials: list, trial, outcome: str) -> None:
        self.done += 1
        result = trial.last_result or {}
        metric = self.ctx.sweep.metric
        value = f"{metric} {result[metric]:.3f}" if isinstance(result.get(metric), float) else f"{metric} n/a"
        sampled = "  ".join(f"{k}={v}" for k, v in trial.config.items())
        progress_log.info(f"trial {self.done}/{max(num_trials(self.ctx.sweep), self.done)} {trial.trial_id} {outcome} at step "
                          f"{result.get('step', 0):.0f}: {value}  ({sampled})")

    def on_experiment_end(self, trials: list, **info) -> None:
        # Runs still RUNNING belong to trials cut off by an interruption; --resume revives them.
        for run in child_runs(self.ctx.tracking_uri, self.ctx.experiment_id, self.ctx.parent_run_id):
            if run.info.status == "RUNNING":
                self._end(run.data.tags[TRIAL_TAG], "KILLED", "interrupted", diverged=False)

    def _end(self, trial_id: str, status: str, outcome: str, *, diverged: bool) -> None:
        end_trial_run(self.ctx.tracking_uri, self.ctx.experiment_id, self.ctx.parent_run_id, trial_id, status=status,
                      outcome=outcome, diverged=diverged)


def _trial_dirname(trial) -> str:
    return trial.trial_id  # short and stable (the default embeds every sampled value)


def preflight(sweep: SweepConfig, configs: list[RunConfig]) -> None:
    """Every check that can fail without Ray: metric availability, weights, datasets, ASHA's rungs (whether the
    trials fit on the cluster is checked once Ray is up, by check_environment)."""
    from zv_ray.train.trainer import check_before_cluster_work

    if sweep.metric.startswith("val/") and any(c.data.num_val_objects == 0 for c in configs):
        raise ConfigError(f"metric {sweep.metric} needs held-out objects: set data.num_val_objects > 0 in the base")
    if sweep.metric.startswith("gso/") and any(not c.train.eval_objects for c in configs):
        raise ConfigError(f"metric {sweep.metric} needs real objects: set train.eval_objects (e.g. ../shared/eval/gso)")
    for cfg in configs:
        check_before_cluster_work(cfg)
    if sweep.scheduler.type == "asha":
        grace, max_t = _asha_steps(sweep, configs[0])
        if grace > max_t:
            raise ConfigError(f"scheduler.grace_period {grace} exceeds scheduler.max_t {max_t}")


def _asha_steps(sweep: SweepConfig, cfg: RunConfig) -> tuple[int, int]:
    s = sweep.scheduler
    return s.grace_period or cfg.train.eval_every, s.max_t or cfg.train.steps


def make_scheduler(sweep: SweepConfig, cfg: RunConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if sweep.scheduler.type == "fifo":
        return FIFOScheduler()
    grace, max_t = _asha_steps(sweep, cfg)
    s = sweep.scheduler
    # time_attr "step": rungs are training steps, which every report carries. stop_last_trials=False: a trial
    # reaching max_t ends on its own (a clean Train shutdown) instead of being killed at its last report.
    return ASHAScheduler(time_attr="step", grace_period=grace, max_t=max_t, reduction_factor=s.reduction_factor,
                         brackets=s.brackets, stop_last_trials=False)


def run_sweep(sweep: SweepConfig, *, resume: bool = False) -> SweepOutcome:
    """Run (or, with resume, finish) a sweep; finished trials are reported on the `zv_ray.sweep.progress` logger."""
    from zv_ray.cluster.resources import TUNE_TRIAL_CPUS, sweep_phases
    from zv_ray.cluster.session import init_ray
    from zv_ray.tracking import experiment_id, fail_run_on_error, finish_run, log_dict, resolve_tracking_uri, start_run
    from zv_ray.train.trainer import check_environment, storage_root

    base = base_data(sweep)
    if sweep.storage_path:
        base = set_keys(base, {"cluster.storage_path": sweep.storage_path})
    base_cfg = validate_dict(RunConfig, set_keys(base, {"cluster.run_name": sweep.name}), source=sweep.name)
    configs = validate_space(sweep, base)
    preflight(sweep, configs)

    experiment_path = f"{storage_root(base_cfg).rstrip('/')}/{sweep.name}"
    restorable = tune.Tuner.can_restore(experiment_path)
    if restorable and not resume:
        raise FileExistsError(f"sweep '{sweep.name}' already exists at {experiment_path}: pass --resume to finish it, "
                              "or give the sweep a new name")
    if resume and not restorable:
        raise FileNotFoundError(f"no sweep to resume at {experiment_path} (run it once without --resume)")

    tracking_uri = resolve_tracking_uri(base_cfg)
    # The `zv-ray doctor` checks on every node type the trials use, and whether the concurrent trials fit.
    check_environment(base_cfg, tracking_uri, phases=sweep_phases(sweep, configs))
    tags = {SWEEP_TAG: sweep.name, ROLE_TAG: "parent", SPACE_TAG: ",".join(sweep.space),
            METRIC_TAG: sweep.metric, MODE_TAG: sweep.mode}
    if (reference := sweep.reference_arm()) is not None:
        tags[REFERENCE_TAG] = arm_label(reference)
    parent_run_id = start_run(tracking_uri, base_cfg, resume=resume, tags=tags)
    if not resume:
        log_dict(tracking_uri, parent_run_id, sweep.model_dump(mode="json"), "sweep.yaml")
    ctx = TrialContext(sweep=sweep, base=base, tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                       experiment_id=experiment_id(tracking_uri, base_cfg.mlflow.experiment),
                       train_storage=f"{experiment_path}/train", root=os.getcwd())
    with fail_run_on_error(tracking_uri, parent_run_id):
        init_ray(base_cfg.cluster)
        # The metric exists only on evaluation reports; ASHA skips reports without it, Tune's strict check would not.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"CPU": TUNE_TRIAL_CPUS})
        if resume:
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(sweep, base_cfg.seed),
                tune_config=tune.TuneConfig(
                    metric=sweep.metric, mode=sweep.mode, scheduler=make_scheduler(sweep, base_cfg),
                    num_samples=sweep.num_samples, max_concurrent_trials=sweep.max_concurrent_trials,
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=sweep.name, storage_path=storage_root(base_cfg), callbacks=[SweepTracker(ctx)],
                    verbose=1 if base_cfg.cluster.verbose else 0,
                ),
            )
        results = tuner.fit()
    done = results.num_errors + sum(
        r.data.tags.get(OUTCOME_TAG) in DONE_OUTCOMES for r in child_runs(tracking_uri, ctx.experiment_id, parent_run_id)
    )
    interrupted = done < num_trials(sweep)  # Tune creates grid trials lazily: a Ctrl-C leaves some unborn
    finish_run(tracking_uri, parent_run_id, status="KILLED" if interrupted else "FINISHED")
    return SweepOutcome(parent_run_id, tracking_uri, experiment_path, len(results), interrupted)
