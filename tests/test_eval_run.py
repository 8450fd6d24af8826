"""`zv-ray eval` end to end on a tiny checkpoint: the table, the grids, results files and MLflow entries."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import pytest
import torch
from conftest import GSO_DIR
from typer.testing import CliRunner

from zv_ray.config import RunConfig
from zv_ray.train.checkpoint import save_checkpoint

needs_gso = pytest.mark.skipif(not GSO_DIR.is_dir(), reason=f"shared GSO objects not found at {GSO_DIR}")
TINY = {
    "zeroverse": {"mesh_resolution": 12},  # coarse meshes keep the in-domain test fast
    "model": {"width": 32, "depth": 1, "num_heads": 2, "patch_size": 8, "bf16": False},
    "render": {"resolution": 64, "num_views": 8},
    "train": {"resolution": 32, "num_input_views": 4, "num_target_views": 4, "steps": 10, "warmup_steps": 0},
    "loss": {"perceptual_weight": 0.0},
    "cluster": {"run_name": "tiny-eval"},
}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A freshly initialized tiny GS-LRM saved like a training checkpoint at step 7; its MLflow store in tmp_path."""
    from zv_ray.model.gslrm import GSLRM

    cfg = RunConfig.model_validate({**TINY, "cluster": {**TINY["cluster"], "storage_path": str(tmp_path / "runs")},
                                    "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "ckpt", model=GSLRM(cfg.model), optimizer=None, step=7, cfg=cfg)
    return path, cfg


def _invoke(*args: str):
    """Run `zv-ray eval|reconstruct ...` through an app holding only these commands (as zv_ray/cli.py registers them)."""
    import typer

    from zv_ray.eval.cli import evaluate, reconstruct

    app = typer.Typer()
    app.command("eval")(evaluate)
    app.command("reconstruct")(reconstruct)
    return CliRunner().invoke(app, list(args), catch_exceptions=False, terminal_width=200)


@needs_gso
def test_eval_writes_table_grids_results_and_mlflow(tiny_checkpoint, tmp_path):
    from mlflow.tracking import MlflowClient

    ckpt, cfg = tiny_checkpoint
    out = tmp_path / "eval"
    result = _invoke("eval", "--checkpoint", str(ckpt), "--objects", str(GSO_DIR), "--max-objects", "2",
                     "--test-views", "4", "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    names = ["Air_Hogs_Wind_Flyers_Set_Airplane_Red", "Android_Figure_Orange"]
    for name in [*names, "mean", "PSNR", "SSIM", "LPIPS"]:
        assert name in result.output
    if "LPIPS n/a" in result.output:  # without VGG weights the reason is printed, never a crash
        assert "VGG16" in result.output

    payload = json.loads((out / "results.json").read_text())
    rows = payload["suites"]["gso"]["objects"]
    assert [r["object"] for r in rows] == names
    for r in rows:
        assert 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1
    assert payload["meta"]["protocol.num_inputs"] == "4" and payload["meta"]["num_test_views"] == "4"
    assert (out / "results.csv").read_text().count("\n") == 4  # header, 2 objects, mean
    assert "Android_Figure_Orange" in (out / "table.txt").read_text()

    grid = iio.imread(out / "grids" / "gso" / "Android_Figure_Orange.png")
    # Inputs row + prediction row + ground-truth row of 8 tiles of 32 px plus a 1 px border.
    assert grid.shape == (3 * 34, 8 * 34, 3)

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["zv_ray.kind"] == "eval"
    assert run.data.params["checkpoint_step"] == "7" and run.data.params["protocol.radius"] == "2.7"
    assert run.data.metrics["gso/psnr"] == pytest.approx(sum(r["psnr"] for r in rows) / 2)
    assert "gso/objects/Android_Figure_Orange/ssim" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "gso/psnr")
    assert [m.step for m in history] == [7]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "results.csv", "table.txt", "grids"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "grids/gso")} == {f"grids/gso/{n}.png" for n in names}


@needs_gso
def test_eval_attaches_to_the_training_run(tiny_checkpoint, tmp_path):
    from mlflow.tracking import MlflowClient

    from zv_ray.train.tracking import start_run

    ckpt, cfg = tiny_checkpoint
    train_run = start_run(cfg.mlflow.tracking_uri, cfg, resume=False)
    result = _invoke("eval", "--checkpoint", str(ckpt), "--objects", str(GSO_DIR), "--max-objects", "1",
                     "--test-views", "2", "--out", str(tmp_path / "eval"), "--attach", "--device", "cpu")
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    run = client.get_run(train_run)
    assert math.isfinite(run.data.metrics["eval/gso/psnr"])
    assert run.data.tags["eval.protocol.num_inputs"] == "4"
    assert {a.path for a in client.list_artifacts(train_run, "eval/step_0000007")} >= {"eval/step_0000007/results.json"}
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no separate eval run


def test_eval_needs_something_to_evaluate(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    result = _invoke("eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "eval"))
    assert result.exit_code == 1 and "--objects" in result.output


def test_eval_names_a_missing_checkpoint(tmp_path):
    result = _invoke("eval", "--checkpoint", str(tmp_path / "none"), "--objects", str(GSO_DIR))
    assert result.exit_code == 1 and "no checkpoint at" in result.output


@needs_gso
def test_in_training_helper_scores_prerendered_views(tiny_checkpoint):
    from zv_ray.eval.evaluate import evaluate_objects
    from zv_ray.eval.loading import load_model
    from zv_ray.eval.prepare import prepare_eval_views

    ckpt, cfg = tiny_checkpoint
    views = prepare_eval_views(GSO_DIR, cfg, max_objects=2, num_test_views=3)
    assert [v.rgba.shape for v in views] == [(4 + 3, 64, 64, 4)] * 2
    model = load_model(ckpt, torch.device("cpu")).model.train()
    metrics = evaluate_objects(model, views, cfg)
    assert set(metrics) == {"gso/psnr", "gso/ssim"}  # no LPIPS network given
    assert model.training  # left as it was
    assert metrics == evaluate_objects(model, views, cfg)  # deterministic


def test_eval_in_domain_zeroverse(tiny_checkpoint, tmp_path):
    pytest.importorskip("zv_ray.zeroverse")
    ckpt, cfg = tiny_checkpoint
    out = tmp_path / "eval"
    result = _invoke("eval", "--checkpoint", str(ckpt), "--zeroverse", "2", "--test-views", "2", "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["suites"]["zeroverse"]["objects"]
    first = cfg.data.val_first_object_id
    assert [r["object"] for r in rows] == [f"zeroverse_{first}", f"zeroverse_{first + 1}"]
