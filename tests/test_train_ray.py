"""Training on a real local Ray (CPU, gloo): learning, MLflow records, resume and fault recovery."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import metric_history, tiny
from mlflow.tracking import MlflowClient
from rich.console import Console

from zv_ray.config import load_config
from zv_ray.model.checkpoint import load_checkpoint
from zv_ray.train.trainer import run_training

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("ray_shutdown_after")]

# A learning rate and warm-up that learn visibly in 30 steps; one restart allowed (the fault drill).
TINY = tiny("train.lr=0.002", "train.warmup_steps=2", "cluster.local_num_cpus=4", "cluster.max_failures=1")


def tiny_config(tmp_path, name: str, *extra: str):
    return load_config(None, [*TINY, f"cluster.storage_path={tmp_path}", f"cluster.run_name={name}", *extra])


def history(outcome, key: str) -> list[tuple[int, float]]:
    return metric_history(outcome.tracking_uri, outcome.mlflow_run_id, key)


def test_two_workers_learn_and_log_to_mlflow(tmp_path):
    cfg = tiny_config(
        tmp_path, "learn",
        "cluster.num_workers=2", "data.num_objects=4", "data.num_val_objects=2",
        "train.global_batch_size=4", "train.steps=30", "train.eval_every=30",
        "train.checkpoint_every=15", "train.image_every=15",
    )
    out = io.StringIO()
    outcome = run_training(cfg, console=Console(file=out, width=200, force_terminal=False))
    losses = [v for _, v in history(outcome, "train/loss")]
    assert len(losses) == 15
    # The console display, fed through Ray Train's controller: with 30 steps every report prints a line (each
    # log_every steps and the step-15 checkpoint), in order.
    shown = [line for line in out.getvalue().splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in shown] == [f"{s}/30" for s in sorted({*range(2, 31, 2), 15})]
    assert "val " in shown[-1] and outcome.metrics["step"] == 30
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses

    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "30" and run.data.params["cluster.num_workers"] == "2"
    for key in ("train/psnr", "train/grad_norm", "train/skipped_steps", "train/lr", "perf/samples_per_s",
                "perf/data_wait_frac", "val/psnr", "val/ssim", "val/white_psnr", "val/psnr_over_white"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(outcome.mlflow_run_id)}
    assert {"images", "gaussians"} <= artifacts
    assert [a.path for a in client.list_artifacts(outcome.mlflow_run_id, "gaussians")] == ["gaussians/gaussians.ply"]
    assert load_checkpoint(outcome.checkpoint)["step"] == 30


def test_resume_continues_step_counter_and_optimizer_state(tmp_path):
    common = ("data.num_objects=2", "train.global_batch_size=2", "train.steps=12", "train.checkpoint_every=6",
              "data.num_val_objects=0")
    straight = run_training(tiny_config(tmp_path, "straight", *common))

    first = run_training(tiny_config(tmp_path, "split", *common, "train.stop_after=6"))
    assert load_checkpoint(first.checkpoint)["step"] == 6
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(tiny_config(tmp_path, "split", *common))
    resumed = run_training(tiny_config(tmp_path, "split", *common), resume=True)

    assert resumed.mlflow_run_id == first.mlflow_run_id
    steps = [s for s, _ in history(resumed, "train/loss")]
    assert steps == list(range(2, 13, 2))
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    exp_a = a["optimizer"]["state"][0]["exp_avg_sq"]
    exp_b = b["optimizer"]["state"][0]["exp_avg_sq"]
    torch.testing.assert_close(exp_a, exp_b, rtol=1e-3, atol=1e-8)


def test_worker_fault_restores_from_checkpoint_and_finishes(tmp_path, monkeypatch):
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv("ZV_RAY_FAULT_AT_STEP", "7")
    monkeypatch.setenv("ZV_RAY_FAULT_MARKER", str(marker))
    cfg = tiny_config(tmp_path, "fault", "data.num_objects=2", "train.global_batch_size=2", "train.steps=10",
                      "train.checkpoint_every=4", "data.num_val_objects=0")
    outcome = run_training(cfg)
    assert marker.exists(), "the injected fault never fired"
    assert load_checkpoint(outcome.checkpoint)["step"] == 10
    steps = [s for s, _ in history(outcome, "train/loss")]
    # Steps 6 (logged before the fault) and 6, 8 again after restoring the step-4 checkpoint.
    assert steps.count(6) == 2 and steps[-1] == 10


def test_the_loop_adds_the_perceptual_term_from_its_start_step(tmp_path):
    """The Ray Train loop with loss.perceptual_weight > 0: GS-LRM's VGG19 feature loss, from a synthetic
    MatConvNet file (no real weights offline), gated by loss.perceptual_start_step."""
    from test_vgg19 import write_matconvnet_vgg19

    weights = tmp_path / "imagenet-vgg-verydeep-19.mat"
    write_matconvnet_vgg19(weights)
    outcome = run_training(tiny_config(
        tmp_path, "perceptual", "loss.perceptual=vgg19", f"loss.vgg19_weights={weights}", "loss.perceptual_weight=0.2",
        "loss.perceptual_start_step=2", "train.log_every=1", "data.num_val_objects=0"))
    perceptual = dict(history(outcome, "train/perceptual"))
    mse, loss = dict(history(outcome, "train/mse")), dict(history(outcome, "train/loss"))
    # Logged after each step: steps 0 and 1 (logged as 1, 2) are MSE only, steps 2 and 3 add 0.2 x perceptual.
    assert sorted(perceptual) == [1, 2, 3, 4]
    assert perceptual[1] == perceptual[2] == 0.0 and loss[2] == pytest.approx(mse[2])
    assert perceptual[3] > 0 and perceptual[4] > 0
    assert loss[4] == pytest.approx(mse[4] + 0.2 * perceptual[4], rel=1e-4)
