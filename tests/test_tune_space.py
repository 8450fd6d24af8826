"""Sweep configs and search spaces: parsing, validation before any Ray work, Tune domains, divergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, as_dict, tiny

from zv_ray.config import ConfigError, validate_dict
from zv_ray.config.sweep import SweepConfig, arm_label, load_sweep_config, num_trials
from zv_ray.tune.space import base_data, param_space, to_tune, trial_config, validate_space
from zv_ray.tune.sweep import is_diverged, make_scheduler, preflight


def sweep_of(**kw) -> SweepConfig:
    data = {"name": "s", "space": {"train.lr": {"type": "grid", "values": [1e-3, 1e-4]}}, **kw}
    return validate_dict(SweepConfig, data, source="test")


SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_experiments_validate_and_run_every_arm_to_the_end(path, monkeypatch):
    monkeypatch.chdir(REPO)  # `base:` and local paths are relative to the working directory, like every zv-ray command
    sweep = load_sweep_config(path)
    configs = validate_space(sweep, base_data(sweep))
    # Ablation-style: every arm repeated over seeds, run to the end, scored on the same real objects.
    assert sweep.seeds >= 2 and sweep.scheduler.type == "fifo" and sweep.metric == "gso/psnr"
    assert all(c.train.eval_objects == str(REPO.parent / "shared" / "eval" / "gso") for c in configs)
    assert sweep.reference is not None and sweep.reference_arm() == sweep.reference
    if path.stem.endswith(("_tiny", "_cpu")):  # the plumbing, and the CPU-scale run the closing notes measure
        return
    # Each GPU experiment has a tiny twin varying the same keys (the arms themselves, except data sizes), and uses
    # the paper's perceptual loss.
    tiny = load_sweep_config(path.with_name(f"{path.stem}_tiny.yaml"))
    assert tiny.space.keys() == sweep.space.keys() and tiny.reference.keys() == sweep.reference.keys()
    if path.stem == "data_source":  # the same arms; the real data differs (your Objaverse set, the 15 scans)
        assert {k: list(e.values) for k, e in tiny.space.items()} == {k: list(e.values) for k, e in sweep.space.items()}
    else:
        assert tiny.space == sweep.space or path.stem == "data_size"
    assert {c.loss.perceptual for c in configs} == {"vgg19"} and {c.train.eval_max_objects for c in configs} == {10}


def test_the_ablations_arms():
    augmentation = load_sweep_config(REPO / "configs" / "sweeps" / "augmentation.yaml")
    configs = validate_space(augmentation, base_data(augmentation))
    probs = {(c.zeroverse.p_heightfield, c.zeroverse.p_boolean, c.zeroverse.p_wireframe) for c in configs}
    assert probs == {(0, 0, 0), (0.4, 0, 0), (0, 0.4, 0), (0, 0, 0.2), (0.4, 0.4, 0.2)}
    # The held-out Zeroverse set sits halfway between each augmentation's off and on rates: no arm is nearer it.
    val = configs[0].data.val_zeroverse
    assert (val.p_heightfield, val.p_boolean, val.p_wireframe) == (0.2, 0.2, 0.1)
    assert {c.train.num_input_views for c in configs} == {8}

    perceptual = load_sweep_config(REPO / "configs" / "sweeps" / "perceptual.yaml")
    arms = {(c.loss.perceptual_weight, c.train.grad_clip, c.train.skip_grad_norm, c.train.max_consecutive_skips)
            for c in validate_space(perceptual, base_data(perceptual))}
    # "off" removes clipping and skipping for real (no threshold at all); its first non-finite step ends the run.
    assert arms == {(w, 1.0, 20.0, 50) for w in (0.5, 0.2)} | {(w, 0.0, None, 1) for w in (0.5, 0.2)}

    views = load_sweep_config(REPO / "configs" / "sweeps" / "views.yaml")
    assert {c.train.num_input_views for c in validate_space(views, base_data(views))} == {4, 8}
    size = load_sweep_config(REPO / "configs" / "sweeps" / "data_size.yaml")
    sizes = [c for c in validate_space(size, base_data(size))]
    # The largest arm is one epoch of the budget: steps x batch samples, samples_per_object per object.
    largest = max(sizes, key=lambda c: c.data.num_objects)
    assert largest.data.num_objects * largest.data.samples_per_object == largest.train.steps * largest.train.global_batch_size


def test_relative_local_paths_are_resolved_where_the_sweep_starts(tmp_path, monkeypatch):
    """Tune runs each trial, and Ray Train each worker, in a folder of its own: a relative path must not reach them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "objects").mkdir()
    sweep = sweep_of(overrides={"train.eval_objects": "objects", "train.init_from": "s3://b/run",
                                "loss.vgg19_weights": str(tmp_path / "w.mat")},
                     space={"src": {"type": "grid", "values": {
                         "real": {"data.sources": [{"kind": "parquet", "path": "sets/real"}]},
                         "mix": {"data.sources": [{"kind": "zeroverse"}, {"kind": "parquet", "path": "s3://b/real"}]}}}})
    real, mix = validate_space(sweep, base_data(sweep))
    monkeypatch.chdir("/")  # where Tune runs the trial: the paths were fixed where the sweep started
    assert real.train.eval_objects == str(tmp_path / "objects") and real.data.sources[0].path == str(tmp_path / "sets" / "real")
    assert real.train.init_from == "s3://b/run" and real.loss.vgg19_weights == str(tmp_path / "w.mat")
    assert real.loss.vgg_weights is None and mix.data.sources[1].path == "s3://b/real"


def test_seeds_cross_every_arm_and_need_a_grid_and_fifo():
    space = {"aug": {"type": "grid", "values": {"none": {"zeroverse.p_boolean": 0.0}, "all": {"zeroverse.p_boolean": 0.4}}},
             "train.lr": {"type": "grid", "values": [1e-3, 1e-4]}}
    sweep = sweep_of(space=space, seeds=3, scheduler={"type": "fifo"}, overrides={"seed": 10})
    assert num_trials(sweep) == 2 * 2 * 3
    assert param_space(sweep, base_seed=10)["seed"] == {"grid_search": [10, 11, 12]}  # the base's seed + 0, 1, 2
    # The reference arm: the first value of every grid entry unless named; its label is how compare groups trials.
    assert arm_label(sweep.reference_arm()) == "aug=none, train.lr=0.001"
    named = sweep_of(space=space, reference={"train.lr": 1e-4, "aug": "all"})
    assert arm_label(named.reference_arm()) == "aug=all, train.lr=0.0001"  # in space order
    assert sweep_of(space={"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}).reference_arm() is None

    with pytest.raises(ConfigError, match="ASHA would stop some runs early"):
        sweep_of(space=space, seeds=2)  # the default scheduler is ASHA
    with pytest.raises(ConfigError, match="space.train.lr is a loguniform entry"):
        sweep_of(space={"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}, seeds=2,
                 scheduler={"type": "fifo"})
    with pytest.raises(ConfigError, match="seeds: N"):
        sweep_of(space={"seed": {"type": "grid", "values": [0, 1]}})
    with pytest.raises(ConfigError, match="give a value for every space key"):
        sweep_of(space=space, reference={"aug": "all"})
    with pytest.raises(ConfigError, match=r"reference.aug: 'some' is not one of"):
        sweep_of(space=space, reference={"aug": "some", "train.lr": 1e-3})


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"type": "grid"}, "needs a non-empty `values`"),
        ({"type": "grid", "values": [1], "low": 0}, "takes `values`"),
        ({"type": "uniform", "low": 1, "high": 1}, "needs low < high"),
        ({"type": "uniform", "values": [1]}, "takes low/high"),
        ({"type": "loguniform", "low": 0, "high": 1}, "low > 0"),
        ({"type": "quniform", "low": 0, "high": 1}, "q is given with quniform"),
        ({"type": "randint", "low": 0.5, "high": 3}, "integer low/high"),
        ({"type": "normal", "values": [1]}, "space.train.lr.type"),
    ],
)
def test_bad_space_entries_name_the_problem(entry, message):
    with pytest.raises(ConfigError, match=message):
        sweep_of(space={"train.lr": entry})


def test_sweep_level_errors():
    with pytest.raises(ConfigError, match="set by the sweep itself"):
        sweep_of(space={"cluster.run_name": {"type": "grid", "values": ["a", "b"]}})
    with pytest.raises(ConfigError, match="set by the sweep itself"):
        sweep_of(space={"aug": {"type": "grid", "values": {"a": {"mlflow.experiment": "x"}}}})
    with pytest.raises(ConfigError, match="without dots"):
        sweep_of(space={"zeroverse.aug": {"type": "choice", "values": {"a": {"zeroverse.p_boolean": 0.1}}}})
    with pytest.raises(ConfigError, match="space is empty"):
        sweep_of(space={})
    with pytest.raises(ConfigError, match="scheduler.fifo.grace_period"):
        sweep_of(scheduler={"type": "fifo", "grace_period": 3})
    with pytest.raises(ConfigError, match="name"):
        sweep_of(name="a/b")


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.lrr": {"type": "grid", "values": [0.1]}}, r"train\.lrr: unknown key"),
        ({"zeroverse.p_boolean": {"type": "uniform", "low": 0.5, "high": 1.5}}, r"zeroverse\.p_boolean.*1\.5"),
        ({"aug": {"type": "grid", "values": {"on": {"zeroverse.p_wirefram": 0.2}}}}, r"zeroverse\.p_wirefram: unknown key"),
        ({"model.width": {"type": "choice", "values": [30]}}, "divisible by num_heads"),
    ],
)
def test_wrong_keys_and_values_fail_before_ray(space, message):
    sweep = sweep_of(space=space)
    with pytest.raises(ConfigError, match=message):
        validate_space(sweep, base_data(sweep))


def test_every_entry_type_becomes_a_tune_domain_in_range():
    sweep = sweep_of(space={
        "train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
        "train.grad_clip": {"type": "uniform", "low": 0.5, "high": 2.0},
        "train.weight_decay": {"type": "quniform", "low": 0.0, "high": 0.1, "q": 0.05},
        "data.first_object_id": {"type": "randint", "low": 0, "high": 3},
        "zeroverse.part_count_weights": {"type": "choice", "values": [[1, 1], [5, 5, 5]]},
    })
    space = param_space(sweep, base_seed=0)
    assert space["seed"] == {"grid_search": [0]}  # one run per trial: seeds defaults to 1
    for _ in range(20):
        lr, clip, wd = space["train.lr"].sample(), space["train.grad_clip"].sample(), space["train.weight_decay"].sample()
        assert 1e-5 <= lr <= 1e-3 and 0.5 <= clip <= 2.0 and wd in (0.0, 0.05, 0.1)
        assert space["data.first_object_id"].sample() in (0, 1, 2)
        assert space["zeroverse.part_count_weights"].sample() in ([1, 1], [5, 5, 5])
    assert to_tune(sweep.space["train.lr"]).__class__.__name__ == "Float"
    assert len(validate_space(sweep, base_data(sweep))) == 2 * 2 * 2 * 2 * 2  # ends of each range x choices


def test_trial_config_expands_bundles_and_plain_values():
    sweep = sweep_of(
        overrides={"train.steps": 40, "train.warmup_steps": 4},
        space={
            "aug": {"type": "grid", "values": {"none": {"zeroverse.p_boolean": 0.0, "zeroverse.p_wireframe": 0.0},
                                               "all": {"zeroverse.p_boolean": 0.4, "zeroverse.p_wireframe": 0.2}}},
            "train.log_every": {"type": "randint", "low": 1, "high": 9},
        },
    )
    cfg = trial_config(sweep, base_data(sweep), {"aug": "all", "train.log_every": np.int64(7), "seed": 3}, "s-t1", Path.cwd())
    assert (cfg.zeroverse.p_boolean, cfg.zeroverse.p_wireframe, cfg.train.log_every, cfg.seed) == (0.4, 0.2, 7, 3)
    assert type(cfg.train.log_every) is int and cfg.train.steps == 40 and cfg.cluster.run_name == "s-t1"
    with pytest.raises(ConfigError, match="lacks space key train.log_every"):
        trial_config(sweep, base_data(sweep), {"aug": "all"}, "x", Path.cwd())


def test_base_file_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  steps: 100\n  warmup_steps: 10\n")
    sweep = sweep_of(base=str(base), overrides={"train.lr": 0.01})
    (cfg,) = {c.train.steps: c for c in validate_space(sweep, base_data(sweep))}.values()
    assert cfg.train.lr in (1e-3, 1e-4)  # the space wins over overrides
    assert cfg.train.steps == 100
    with pytest.raises(ConfigError, match="not found"):
        base_data(sweep_of(base=str(tmp_path / "missing.yaml")))


def tiny_sweep(**kw) -> SweepConfig:
    """The tiny recipe, streamed, 8 steps with an evaluation at 4 (the ASHA rungs below)."""
    return sweep_of(overrides=as_dict(tiny("data.materialize=false", "train.steps=8", "train.warmup_steps=2",
                                           "train.eval_every=4")), **kw)


def test_sweep_demand_counts_every_concurrent_trial():
    from zv_ray.cluster.resources import Supply, group_nodes, shortfall, sweep_phases

    four = Supply(group_nodes([{"Alive": True, "Resources": {"CPU": 4.0, "memory": 2.0**34}}]), local=True)
    sweep = tiny_sweep()
    # One streamed trial: its function (0.01 CPU), 1 train worker and 1 generator actor (validation renders on rank 0).
    (phase,) = sweep_phases(sweep, validate_space(sweep, base_data(sweep)))
    assert sum(g.total("CPU") for g in phase) == pytest.approx(2.01)
    assert shortfall([phase], four) is None
    too_many = tiny_sweep(max_concurrent_trials=2)
    problem = shortfall(sweep_phases(too_many, validate_space(too_many, base_data(too_many))), four)
    assert "needs 4.02 CPU" in problem and "max_concurrent_trials: 1 in the sweep file" in problem


def test_preflight_catches_a_sweep_that_lacks_its_metric_or_rungs():
    sweep = tiny_sweep()
    preflight(sweep, validate_space(sweep, base_data(sweep)))
    no_val = tiny_sweep(space={"data.num_val_objects": {"type": "grid", "values": [0, 2]}})
    with pytest.raises(ConfigError, match="num_val_objects > 0"):
        preflight(no_val, validate_space(no_val, base_data(no_val)))
    no_real = tiny_sweep(metric="gso/psnr")
    with pytest.raises(ConfigError, match="set train.eval_objects"):
        preflight(no_real, validate_space(no_real, base_data(no_real)))
    late = tiny_sweep(scheduler={"type": "asha", "grace_period": 100})
    with pytest.raises(ConfigError, match="grace_period 100 exceeds"):
        preflight(late, validate_space(late, base_data(late)))


def test_asha_defaults_follow_the_base_config():
    """tiny_sweep: eval_every 4, train.steps 8. ASHA judges val/psnr (higher is better) on training steps, with rungs
    at the first evaluation (4) and at train.steps (8), and lets the first trial to reach the end finish on its own."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    sweep = tiny_sweep()
    cfg = validate_space(sweep, base_data(sweep))[0]

    def decisions(*reports: tuple[str, int, float | None]) -> list[str]:
        """(trial, step, val/psnr or None for a report without it) in order -> ASHA's answer to each, as Tune asks."""
        asha = make_scheduler(sweep, cfg)
        asha.set_search_properties(sweep.metric, sweep.mode)  # what Tuner(tune_config=TuneConfig(metric, mode)) does
        trials: dict[str, Trial] = {}
        answers = []
        for name, step, psnr in reports:
            if name not in trials:
                trials[name] = Trial("zv-sweep", stub=True)
                asha.on_trial_add(None, trials[name])
            iteration = 1 + sum(r[0] == name for r in reports[: len(answers)])  # Tune counts reports, not steps
            result = {"step": step, "training_iteration": iteration, "train/loss": 0.1}
            answers.append(asha.on_trial_result(None, trials[name], result if psnr is None else {**result, sweep.metric: psnr}))
        return answers

    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    # Nothing is judged before step 4 (the first evaluation); there a worse trial is stopped, a better one goes on.
    assert decisions(("a", 3, 20.0), ("b", 3, 1.0), ("a", 4, 20.0), ("b", 4, 1.0), ("c", 4, 30.0)) == [go, go, go, stop, go]
    assert decisions(("a", 4, 20.0), ("b", 4, None)) == [go, go]  # a report without the metric is never judged
    # A second rung at train.steps: a trial reaching step 8 is judged afresh there (kept, first at the rung)...
    assert decisions(("a", 4, 20.0), ("b", 8, 1.0)) == [go, go]
    # ...and none beyond it: step 16 is judged at the rung of 8. The first to reach step 8 is not stopped there.
    assert decisions(("a", 8, 20.0), ("b", 16, 1.0)) == [go, stop]


def test_divergence_is_the_loop_flag_or_a_non_finite_loss():
    assert not is_diverged({"train/loss": 0.1, "diverged": 0.0, "step": 2}) and not is_diverged({})
    assert is_diverged({"train/loss": 0.1, "diverged": 1.0})
    assert is_diverged({"train/loss": float("nan")}) and is_diverged({"train/loss": float("inf")})
