"""`zv-ray eval` end to end on a tiny checkpoint: the table, the grids, results files and MLflow entries."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import GSO_DIR, tiny
from typer.testing import CliRunner

from zv_ray.config import RunConfig, load_config
from zv_ray.model.checkpoint import save_checkpoint

needs_gso = pytest.mark.skipif(not GSO_DIR.is_dir(), reason=f"shared GSO objects not found at {GSO_DIR}")
# A checkpoint of the tiny recipe at 32 px with patch 8, scored on 4 inputs + 4 test views of 64 px renders.
TINY = tiny("model.patch_size=8", "model.bf16=false", "render.resolution=64", "render.num_views=8", "train.resolution=32",
            "train.num_input_views=4", "train.num_target_views=4", "train.steps=10", "train.warmup_steps=0",
            "cluster.run_name=tiny-eval")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A freshly initialized tiny GS-LRM saved like a training checkpoint at step 7; its MLflow store in tmp_path."""
    from zv_ray.model.gslrm import GSLRM

    cfg = load_config(None, [*TINY, f"cluster.storage_path={tmp_path / 'runs'}",
                             f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "ckpt", model=GSLRM(cfg.model), optimizer=None, step=7, cfg=cfg)
    return path, cfg


def _invoke(*args: str):
    """Run `zv-ray eval|reconstruct ...` through an app holding only these commands (as zv_ray/cli.py registers them)."""
    import typer

    from zv_ray.cli.eval import evaluate, reconstruct

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
    for name in [*names, "mean", "PSNR", "SSIM", "LPIPS", "white", "margin"]:
        assert name in result.output
    if "LPIPS n/a" in result.output:  # without VGG weights the reason is printed, never a crash
        assert "VGG16" in result.output

    payload = json.loads((out / "results.json").read_text())
    rows = payload["suites"]["gso"]["objects"]
    assert [r["object"] for r in rows] == names
    for r in rows:
        assert 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and 0 < r["white_psnr"] < 60
        assert r["psnr_over_white"] == pytest.approx(r["psnr"] - r["white_psnr"])
    assert payload["meta"]["protocol.num_inputs"] == "4" and payload["meta"]["num_test_views"] == "4"
    assert (out / "results.csv").read_text().count("\n") == 4  # header, 2 objects, mean
    table = (out / "table.txt").read_text()
    assert "Android_Figure_Orange" in table and "white PSNR" in table and "PSNR - white" in table

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

    from zv_ray.tracking import start_run

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
def test_in_training_helper_scores_prerendered_views(tiny_checkpoint, tmp_path):
    from zv_ray.eval.evaluate import evaluate_objects
    from zv_ray.eval.loading import load_model
    from zv_ray.eval.prepare import prepare_eval_views

    ckpt, cfg = tiny_checkpoint
    views = prepare_eval_views(GSO_DIR, cfg, max_objects=2, num_test_views=3)
    res = cfg.train.resolution  # rendered at render.resolution, kept at the model's
    assert [v.views.images.shape for v in views] == [(1, 4 + 3, 3, res, res)] * 2
    model = load_model(ckpt, torch.device("cpu")).model.train()
    metrics, kept = evaluate_objects(model, views, cfg, keep=1)
    # No LPIPS network given; the all-white image is scored beside the model, with the margin over it.
    assert set(metrics) == {"gso/psnr", "gso/ssim", "gso/white_psnr", "gso/white_ssim", "gso/psnr_over_white"}
    assert metrics["gso/psnr_over_white"] == pytest.approx(metrics["gso/psnr"] - metrics["gso/white_psnr"])
    assert model.training  # left as it was
    assert metrics == evaluate_objects(model, views, cfg)[0]  # deterministic
    assert [r.name for r in kept] == [views[0].name]

    # What a sweep's trials leave for `zv-ray compare`: the kept objects' test views as uint8, read back intact.
    from zv_ray.eval.predictions import load_predictions, pack_predictions, save_predictions

    back = load_predictions(save_predictions(tmp_path / "val.npz", pack_predictions(kept, step=7)))
    assert (back.step, back.names, back.pred.shape) == (7, [views[0].name], (1, 3, res, res, 3))
    assert back.pred.dtype == np.uint8 and back.target.shape == back.pred.shape
    np.testing.assert_allclose(back.pred[0] / 255.0, kept[0].pred.permute(0, 2, 3, 1).numpy(), atol=0.5 / 255 + 1e-6)
    assert back.psnr[0] == pytest.approx(kept[0].psnr)

    # And every object's scores, which compare pairs object by object across arms and seeds.
    from zv_ray.eval.evaluate import score_objects, summarize
    from zv_ray.eval.object_scores import ObjectScores, load_object_scores, save_object_scores

    scores, _ = score_objects(model, views, cfg)
    assert list(scores) == [v.name for v in views] and summarize(scores.values(), "gso") == metrics
    back = load_object_scores(save_object_scores(tmp_path / "gso.json", ObjectScores("gso", 7, scores)))
    assert (back.suite, back.step, back.objects) == ("gso", 7, scores)


def test_eval_in_domain_zeroverse(tiny_checkpoint, tmp_path):
    """`--zeroverse 2`: the two held-out objects (ids from data.val_first_object_id, never trained on), each scored
    with the all-white baseline and the margin over it; the scores are those of the pictures in its grid."""
    from zv_ray.eval.prepare import render_eval_object
    from zv_ray.eval.protocol import EvalProtocol
    from zv_ray.losses.metrics import psnr
    from zv_ray.render.renderer import Renderer
    from zv_ray.zeroverse import generate_object

    ckpt, cfg = tiny_checkpoint
    out = tmp_path / "eval"
    result = _invoke("eval", "--checkpoint", str(ckpt), "--zeroverse", "2", "--test-views", "2", "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    suite = json.loads((out / "results.json").read_text())["suites"]["zeroverse"]
    first = cfg.data.val_first_object_id
    assert first >= cfg.data.num_objects  # disjoint from the training ids 0 .. num_objects - 1
    names = [f"zeroverse_{first}", f"zeroverse_{first + 1}"]
    assert [r["object"] for r in suite["objects"]] == names
    targets = {}
    for row in suite["objects"]:
        assert all(math.isfinite(row[k]) for k in ("psnr", "ssim", "white_psnr", "white_ssim", "psnr_over_white"))
        assert row["psnr_over_white"] == pytest.approx(row["psnr"] - row["white_psnr"])
        # Grid: 4 inputs on top, then the 2 predicted test views over their ground truth, 32 px tiles in a 1 px border.
        grid = iio.imread(out / "grids" / "zeroverse" / f"{row['object']}.png")
        assert grid.shape == (3 * 34, 8 * 34, 3)
        tiles = torch.from_numpy(grid).permute(2, 0, 1).float() / 255

        def tile(r: int, c: int) -> torch.Tensor:  # [3, 32, 32]
            return tiles[:, r * 34 + 1 : r * 34 + 33, c * 34 + 1 : c * 34 + 33]

        pred, target = torch.stack([tile(1, 0), tile(1, 1)]), torch.stack([tile(2, 0), tile(2, 1)])
        assert (target < 0.9).any(dim=1).flatten(1).float().mean(1).min() > 0.01  # an object in every test view
        assert row["psnr"] == pytest.approx(float(psnr(pred, target).mean()), abs=0.05)
        assert row["white_psnr"] == pytest.approx(float(psnr(torch.ones_like(target), target).mean()), abs=0.05)
        targets[row["object"]] = target
    for key in ("psnr", "white_psnr", "psnr_over_white"):
        assert suite["mean"][key] == pytest.approx(sum(r[key] for r in suite["objects"]) / 2)
    assert all(name in (out / "table.txt").read_text() for name in names)
    # The first one is object id `first` of the held-out generator settings, seen from the protocol's test views.
    renderer = Renderer.from_config(cfg.render)
    try:
        held_out = generate_object(cfg.seed, first, cfg.data.val_zeroverse).scene
        obj = render_eval_object(names[0], held_out, EvalProtocol.for_config(cfg, num_test_views=2), cfg, renderer)
    finally:
        renderer.close()
    torch.testing.assert_close(targets[names[0]], obj.views.images[0, 4:], atol=0.6 / 255, rtol=0)


def test_validation_objects_ignore_the_training_generator_settings():
    """The held-out set is generated with data.val_zeroverse and a fixed seed, so a sweep over zeroverse.*
    (augmentation arms) or over seeds ranks every trial on the same objects; changing data.val_zeroverse does
    change them."""
    from zv_ray.eval.prepare import iter_zeroverse_objects
    from zv_ray.eval.protocol import EvalProtocol

    def first_object(**update) -> np.ndarray:
        base = {"render": {"resolution": 32}, "train": {"resolution": 32},
                "data": {"val_zeroverse": {"mesh_resolution": 8, "texture": {"resolution": 16}}}}
        cfg = RunConfig.model_validate({**base, **update})
        (obj,) = iter_zeroverse_objects(cfg, 1, EvalProtocol(num_inputs=2, num_test_views=1))
        return obj.views.images.numpy()

    reference = first_object()
    swept = first_object(zeroverse={"p_boolean": 1.0, "p_wireframe": 1.0, "mesh_resolution": 8})
    assert np.array_equal(reference, swept)
    assert np.array_equal(reference, first_object(seed=3))  # another seed of the same arm
    other = first_object(data={"val_zeroverse": {"mesh_resolution": 8, "texture": {"resolution": 16}, "p_wireframe": 1.0,
                                                 "p_boolean": 1.0}})
    assert not np.array_equal(reference, other)
