"""`zv-ray compare` on fabricated sweep runs in a sqlite MLflow store (no Ray)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import typer
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from zv_ray.cli.sweep import compare as compare_command
from zv_ray.eval.object_scores import ObjectScores, save_object_scores
from zv_ray.eval.predictions import Predictions, save_predictions
from zv_ray.tune.compare import compare, table, tables
from zv_ray.tracking import (
    DIVERGED_TAG, METRIC_TAG, MODE_TAG, OUTCOME_TAG, REFERENCE_TAG, ROLE_TAG, SPACE_TAG, SWEEP_TAG, TRIAL_TAG,
)

TRIALS = [  # trial id, augmentation, perceptual weight, val/psnr history, diverged
    ("t0", "none", 0.2, [10.0, 12.0], False),
    ("t1", "all", 0.2, [11.0, 14.5], False),
    ("t2", "all", 0.5, [9.0, 8.0], True),
]
# Each trial's prediction is one solid colour, so the grid can be read back; t2 diverged before any evaluation.
COLOURS = {"t0": (200, 30, 30), "t1": (30, 200, 30)}
TARGET = (30, 30, 200)
LR_TRIALS = [("l0", 1e-4, 0.30), ("l1", 1e-3, 0.20), ("l2", 1e-2, 0.25)]  # trial id, train.lr, best val/lpips


def log_predictions(client, run_id: str, colour: tuple[int, int, int], tmp: Path) -> None:
    """The artifact the training hook writes: 2 objects x 3 test views of 8 px."""
    pred = np.broadcast_to(np.array(colour, np.uint8), (2, 3, 8, 8, 3)).copy()
    target = np.broadcast_to(np.array(TARGET, np.uint8), pred.shape).copy()
    path = save_predictions(tmp / run_id / "val.npz", Predictions(8, ["val_0000", "val_0001"], pred, target,
                                                                   np.array([12.0, 13.0])))
    client.log_artifact(run_id, str(path), "predictions")


def fabricate_sweep(client, exp: str, name: str, space: str, metric: str, mode: str, **tags: str) -> str:
    return client.create_run(exp, run_name=name, tags={
        SWEEP_TAG: name, ROLE_TAG: "parent", SPACE_TAG: space, METRIC_TAG: metric, MODE_TAG: mode, **tags,
    }).info.run_id


# A seeded sweep: 3 arms x 2 seeds, each run scored on the same 4 real objects. The objects differ by several dB
# (as GSO objects do), seeds by 0.5 dB; "none" trails the reference by 0.05 dB give or take 0.1 (noise), "wire"
# leads it by 1.5 dB give or take 0.1.
OBJECT_PSNR = {"mug": 24.0, "shoe": 18.0, "bull": 21.0, "bowl": 27.0}
GAP = {"all": [[0.0] * 4] * 2, "none": [[-0.15, 0.05, -0.1, 0.0], [0.05, -0.15, 0.0, -0.1]],
       "wire": [[1.4, 1.6, 1.5, 1.45], [1.55, 1.4, 1.6, 1.5]]}


def seeded_psnr(arm: str, seed: int) -> dict[str, float]:
    return {o: v + 0.5 * seed + GAP[arm][seed][i] for i, (o, v) in enumerate(OBJECT_PSNR.items())}


def log_scores(client, run_id: str, suite: str, psnr: dict[str, float], tmp: Path) -> None:
    """The artifact the training hook writes at every evaluation (the final one stays)."""
    objects = {o: {"psnr": p, "ssim": 0.8, "lpips": None, "white_psnr": 15.0, "white_ssim": 0.9, "white_lpips": None,
                   "psnr_over_white": p - 15.0} for o, p in psnr.items()}
    path = save_object_scores(tmp / run_id / f"{suite}.json", ObjectScores(suite, 8, objects))
    client.log_artifact(run_id, str(path), "scores")


def trial_run(client, exp: str, parent: str, sweep: str, trial_id: str, diverged: bool = False) -> str:
    return client.create_run(exp, run_name=f"{sweep}-{trial_id}", tags={
        "mlflow.parentRunId": parent, SWEEP_TAG: sweep, ROLE_TAG: "trial", TRIAL_TAG: trial_id,
        DIVERGED_TAG: "yes" if diverged else "no", OUTCOME_TAG: "diverged" if diverged else "completed",
    }).info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"  # one store: creating one takes seconds
    client = MlflowClient(uri)
    exp = client.create_experiment("zv-ray", artifact_location=str(tmp / "artifacts"))
    parent = fabricate_sweep(client, exp, "ablate", "augmentation,loss.perceptual_weight", "val/psnr", "max")
    for trial_id, aug, weight, psnr, diverged in TRIALS:
        run = trial_run(client, exp, parent, "ablate", trial_id, diverged)
        for k, v in {"sweep.augmentation": aug, "sweep.loss.perceptual_weight": weight,
                     "loss.perceptual_weight": weight, "zeroverse.p_boolean": 0.4 if aug == "all" else 0.0}.items():
            client.log_param(run, k, v)
        metrics = [Metric("val/psnr", v, 0, 4 * (i + 1)) for i, v in enumerate(psnr)]
        metrics += [Metric("val/white_psnr", 9.5, 0, 4 * (i + 1)) for i in range(len(psnr))]
        metrics += [Metric("train/loss", 1.0 / (s + 1), 0, s) for s in (2, 4, 6, 8)]
        metrics += [Metric("train/skipped_steps", 3.0 if diverged else 0.0, 0, 8)]
        client.log_batch(run, metrics=metrics)
        if trial_id in COLOURS:
            log_predictions(client, run, COLOURS[trial_id], tmp)
        client.set_terminated(run)
    client.set_terminated(parent)

    # A second sweep: one numeric key, a lower-is-better metric, no predictions logged.
    lr_parent = fabricate_sweep(client, exp, "lr-search", "train.lr", "val/lpips", "min")
    for trial_id, lr, lpips in LR_TRIALS:
        run = trial_run(client, exp, lr_parent, "lr-search", trial_id)
        client.log_param(run, "sweep.train.lr", lr)
        client.log_batch(run, metrics=[Metric("val/lpips", lpips + 0.1, 0, 4), Metric("val/lpips", lpips, 0, 8),
                                       Metric("train/loss", 0.1, 0, 8)])
        client.set_terminated(run)

    seeded = fabricate_sweep(client, exp, "seeded", "augmentation", "gso/psnr", "max",
                             **{REFERENCE_TAG: "augmentation=all"})
    for i, (arm, seed) in enumerate((a, s) for a in GAP for s in (0, 1)):
        run = trial_run(client, exp, seeded, "seeded", f"s{i}")
        for k, v in {"sweep.augmentation": arm, "sweep.seed": seed, "seed": seed}.items():
            client.log_param(run, k, v)
        psnr = seeded_psnr(arm, seed)
        client.log_batch(run, metrics=[Metric("gso/psnr", float(np.mean(list(psnr.values()))), 0, 8),
                                       Metric("train/loss", 0.1, 0, 8)])
        log_scores(client, run, "gso", psnr, tmp)
        # The held-out Zeroverse set: every arm 2 dB below its real-object score, the same gaps.
        log_scores(client, run, "val", {o: p - 2.0 for o, p in psnr.items()}, tmp)
        client.set_terminated(run)
    client.set_terminated(seeded)
    return uri, parent


def test_compare_table_plots_and_artifacts(store, tmp_path):
    uri, parent = store
    comp = compare(uri, "ablate", tmp_path / "out")
    assert comp.parent_run_id == parent and comp.space_keys == ["augmentation", "loss.perceptual_weight"]
    assert [r.trial_id for r in comp.rows] == ["t1", "t0", "t2"]  # best val/psnr first
    best = comp.rows[0]
    assert (best.best, best.final_loss, best.steps, best.skipped, best.diverged) == (14.5, 1.0 / 9, 8, 0, False)
    assert comp.rows[2].diverged and comp.rows[2].best == 9.0 and comp.rows[2].outcome == "diverged"
    assert comp.rows[0].setting(comp.space_keys) == "augmentation=all, loss.perceptual_weight=0.2"
    assert comp.rows[0].setting(comp.space_keys, leave_out="augmentation") == "loss.perceptual_weight=0.2"

    console = Console(record=True, width=200)
    console.print(table(comp))
    text = console.export_text()
    assert best.white == 9.5
    # Beside every trial: the all-white image on the same fixed validation views, and the margin over it.
    for needle in ("t0", "t1", "t2", "augmentation", "best val/psnr", "14.50", "white", "9.50", "+5.00", "-0.50",
                   "diverged", "yes"):
        assert needle in text, needle
    # A plot per key the sweep varies, named by the sweep's metric and the key.
    names = sorted(p.name for p in comp.files)
    assert names == ["curves.png", "predictions_val.png", "table.txt", "val_psnr_by_augmentation.png",
                     "val_psnr_by_loss.perceptual_weight.png"]
    assert all(p.stat().st_size > 1000 for p in comp.files if p.suffix == ".png")
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "compare")}
    assert logged == {f"compare/{n}" for n in names}

    # The side-by-side grid shows the ground truth and every trial that has predictions, and nothing else.
    grid = iio.imread(tmp_path / "out" / "predictions_val.png")[..., :3]
    area = {c: int(np.all(grid == c, axis=-1).sum()) for c in (TARGET, *COLOURS.values())}
    # 2 objects x 3 views: six equal cells of ground truth and of each trial's prediction.
    assert area[TARGET] > 6 * 100 and all(abs(a / area[TARGET] - 1) < 0.05 for a in area.values()), area


def test_compare_follows_the_sweeps_own_keys_and_metric(store, tmp_path):
    uri, _ = store
    comp = compare(uri, "lr-search", tmp_path / "lr")
    assert (comp.metric, comp.mode, comp.space_keys) == ("val/lpips", "min", ["train.lr"])
    assert [(r.trial_id, r.best) for r in comp.rows] == [("l1", 0.20), ("l2", 0.25), ("l0", 0.30)]  # lowest first
    assert sorted(p.name for p in comp.files) == ["curves.png", "table.txt", "val_lpips_by_train.lr.png"]


def test_compare_by_run_id_and_clear_lookup_errors(store, tmp_path):
    uri, parent = store
    assert compare(uri, parent, tmp_path / "o", log_artifacts=False).sweep == "ablate"
    with pytest.raises(LookupError, match="known sweeps: ablate"):
        compare(uri, "nope", tmp_path / "o")
    child = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("zv-ray").experiment_id], f"tags.`{TRIAL_TAG}` = 't0'"
    )[0].info.run_id
    with pytest.raises(LookupError, match="not a sweep's parent run"):
        compare(uri, child, tmp_path / "o")


def test_compare_command(store, tmp_path):
    uri, _ = store
    app = typer.Typer()  # the command alone: zv_ray.cli imports every other capability
    app.command("compare")(compare_command)
    app.command("unused")(lambda: None)  # two commands, so typer keeps the subcommand name
    result = CliRunner().invoke(app, ["compare", "ablate", "--tracking-uri", uri, "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "t1" in result.output and (tmp_path / "cli" / "curves.png").exists()


def test_compare_puts_intervals_on_arms_over_seeds_and_objects(store, tmp_path):
    uri, _ = store
    comp = compare(uri, "seeded", tmp_path / "seeded")
    assert comp.reference == "augmentation=all" and sorted({r.seed for r in comp.rows}) == [0, 1]
    for suite, offset in (("gso", 0.0), ("val", -2.0)):
        stats = {s.arm: s for s in comp.suites()[suite]}
        assert list(stats)[0] == "augmentation=all" and stats["augmentation=all"].reference
        ref = np.array([list(seeded_psnr("all", s).values()) for s in (0, 1)]) + offset
        assert stats["augmentation=all"].mean.mean == pytest.approx(ref.mean())
        assert (stats["augmentation=all"].runs, stats["augmentation=all"].objects) == (2, 4)
        # Paired by seed and object: the mean difference is the mean of the gaps.
        for arm in ("none", "wire"):
            assert stats[f"augmentation={arm}"].diff.mean == pytest.approx(np.mean(GAP[arm]))
            assert (stats[f"augmentation={arm}"].diff.seeds, stats[f"augmentation={arm}"].diff.objects) == (2, 4)
        assert stats["augmentation=none"].verdict("max") == "not distinguishable"
        assert stats["augmentation=wire"].verdict("max") == "better"
        assert stats["augmentation=wire"].diff.low > 1.0

    console = Console(record=True, width=250)
    for t in tables(comp):
        console.print(t)
    text = console.export_text()
    assert text.count("not distinguishable") == 2 and text.count("better") == 2  # gso and val, one row each
    assert "augmentation=all (reference)" in text and "2 seeds x 4 objects" in text
    mean_none = np.mean([list(seeded_psnr("none", s).values()) for s in (0, 1)])
    assert f"{mean_none:.2f} [" in text  # a mean with its interval
    names = sorted(p.name for p in comp.files)
    assert {"intervals_gso.png", "intervals_val.png"} <= set(names)
    assert "not distinguishable" in (tmp_path / "seeded" / "table.txt").read_text()
    logged = {a.path for a in MlflowClient(uri).list_artifacts(comp.parent_run_id, "compare")}
    assert {"compare/intervals_gso.png", "compare/intervals_val.png", "compare/table.txt"} <= logged
