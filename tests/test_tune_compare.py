"""`zv-ray compare` on fabricated sweep runs in a sqlite MLflow store (no Ray)."""

from __future__ import annotations

import pytest
import typer
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from zv_ray.cli.sweep import compare as compare_command
from zv_ray.tune.compare import compare, table
from zv_ray.tracking import (
    DIVERGED_TAG, METRIC_TAG, MODE_TAG, OUTCOME_TAG, ROLE_TAG, SPACE_TAG, SWEEP_TAG, TRIAL_TAG,
)

TRIALS = [  # trial id, augmentation, perceptual weight, val/psnr history, diverged
    ("t0", "none", 0.2, [10.0, 12.0], False),
    ("t1", "all", 0.2, [11.0, 14.5], False),
    ("t2", "all", 0.5, [9.0, 8.0], True),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # one store: creating one takes seconds
    client = MlflowClient(uri)
    exp = client.create_experiment("zv-ray")
    parent = client.create_run(exp, run_name="ablate", tags={
        SWEEP_TAG: "ablate", ROLE_TAG: "parent", SPACE_TAG: "augmentation,loss.perceptual_weight",
        METRIC_TAG: "val/psnr", MODE_TAG: "max",
    }).info.run_id
    for trial_id, aug, weight, psnr, diverged in TRIALS:
        run = client.create_run(exp, run_name=f"ablate-{trial_id}", tags={
            "mlflow.parentRunId": parent, SWEEP_TAG: "ablate", ROLE_TAG: "trial", TRIAL_TAG: trial_id,
            DIVERGED_TAG: "yes" if diverged else "no", OUTCOME_TAG: "diverged" if diverged else "completed",
        }).info.run_id
        for k, v in {"sweep.augmentation": aug, "sweep.loss.perceptual_weight": weight,
                     "loss.perceptual_weight": weight, "zeroverse.p_boolean": 0.4 if aug == "all" else 0.0}.items():
            client.log_param(run, k, v)
        metrics = [Metric("val/psnr", v, 0, 4 * (i + 1)) for i, v in enumerate(psnr)]
        metrics += [Metric("val/white_psnr", 9.5, 0, 4 * (i + 1)) for i in range(len(psnr))]
        metrics += [Metric("train/loss", 1.0 / (s + 1), 0, s) for s in (2, 4, 6, 8)]
        metrics += [Metric("train/skipped_steps", 3.0 if diverged else 0.0, 0, 8)]
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run)
    client.set_terminated(parent)
    return uri, parent


def test_compare_table_plots_and_artifacts(store, tmp_path):
    uri, parent = store
    comp = compare(uri, "ablate", tmp_path / "out")
    assert comp.parent_run_id == parent and comp.space_keys == ["augmentation", "loss.perceptual_weight"]
    assert [r.trial_id for r in comp.rows] == ["t1", "t0", "t2"]  # best val/psnr first
    best = comp.rows[0]
    assert (best.best, best.final_loss, best.steps, best.skipped, best.diverged) == (14.5, 1.0 / 9, 8, 0, False)
    assert comp.rows[2].diverged and comp.rows[2].best == 9.0 and comp.rows[2].outcome == "diverged"
    assert comp.rows[0].setting(comp.space_keys) == "augmentation=all"

    console = Console(record=True, width=200)
    console.print(table(comp))
    text = console.export_text()
    assert best.white == 9.5
    # Beside every trial: the all-white image on the same fixed validation views, and the margin over it.
    for needle in ("t0", "t1", "t2", "augmentation", "best val/psnr", "14.50", "white", "9.50", "+5.00", "-0.50",
                   "diverged", "yes"):
        assert needle in text, needle
    names = sorted(p.name for p in comp.files)
    assert names == ["curves.png", "psnr_vs_perceptual_weight.png", "table.txt"]
    assert all(p.stat().st_size > 1000 for p in comp.files if p.suffix == ".png")
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "compare")}
    assert logged == {f"compare/{n}" for n in names}


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
