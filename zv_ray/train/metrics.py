"""The loop's metrics: every rank computes them (its reports carry them), rank 0 logs them to MLflow on
train.log_every and a prediction grid on train.image_every."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from zv_ray.data.plan import DataPlan
from zv_ray.inference.views import PosedViews, uint8_images
from zv_ray.train.schedule import Every
from zv_ray.train.step import StepResult
from zv_ray.train.worker import LoopState, Worker


def psnr_of(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred.detach().clamp(0, 1) - target) ** 2).item()
    return -10.0 * math.log10(max(mse, 1e-10))


def image_grid(batch: PosedViews, pred: torch.Tensor) -> np.ndarray:
    """First object of the batch: inputs on top, prediction and target of every view below. uint8 [H, W, 3]."""
    inputs = torch.ones_like(batch.images[0])
    inputs[: batch.num_inputs] = batch.images[0, : batch.num_inputs]
    rows = [torch.cat(list(views.detach().float()), dim=-1) for views in (inputs, pred[0], batch.images[0])]
    return uint8_images(torch.cat(rows, dim=-2).cpu())


class MetricsLogger:
    def __init__(self, worker: Worker, loop_config: dict[str, Any], state: LoopState, resumed: bool, plan: DataPlan):
        tc = worker.cfg.train
        self.due, self.image_due = Every(tc.log_every), Every(tc.image_every)
        self.global_batch, self.plan = tc.global_batch_size, plan
        self.source_labels = [s.label for s in worker.cfg.data.sources]
        self._window = {"time": 0.0, "wait": 0.0, "steps": 0}
        self.run = None  # rank 0's MLflow run
        if worker.rank == 0:
            from zv_ray.tracking import RunLogger

            self.run = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"], system_metrics_every_s=10.0)
            # One point per (re)start: resumes, restarts after failures and elastic resizes (the worker count's
            # history is the resize record: step and time of each change) are visible.
            started = {"train/workers": float(worker.world)}
            if resumed:
                started["train/resumed_from_step"] = float(state.step)
            self.run.metrics(started, step=state.step)

    def step_started(self, data_wait: float) -> None:
        self._started = time.perf_counter() - data_wait
        self._window["wait"] += data_wait

    def step_metrics(self, state: LoopState, batch: PosedViews, result: StepResult) -> dict[str, float]:
        """This step's metrics; on a logging step, the throughput since the last one too."""
        self._window["time"] += time.perf_counter() - self._started
        self._window["steps"] += 1
        grad_norm = result.outcome.grad_norm
        metrics = {
            "train/loss": result.loss,
            **{f"train/{k}": v for k, v in result.terms.items()},
            "train/psnr": psnr_of(result.pred, batch.images),
            "train/grad_norm": grad_norm if math.isfinite(grad_norm) else float("nan"),
            "train/skipped_steps": float(state.skipped_total),
            "train/lr": result.lr,
        }
        if result.tile_intersections is not None:  # gsplat's int32 headroom, watched as footprints grow
            metrics["train/max_tile_intersections"] = float(result.tile_intersections)
        if self.due(state.step, state.final):
            metrics.update(self._throughput())
            if len(self.source_labels) > 1:  # the realized mix of the samples trained on so far, against the weights
                shares = self.plan.shares(state.step)
                metrics.update({f"data/share/{label}": float(v) for label, v in zip(self.source_labels, shares)})
        if self.run is not None and self.image_due(state.step, state.final):
            self.run.image(image_grid(batch, result.pred), f"images/step_{state.step:07d}.png")
        return metrics

    def _throughput(self) -> dict[str, float]:
        w, self._window = self._window, {"time": 0.0, "wait": 0.0, "steps": 0}
        return {"perf/samples_per_s": self.global_batch * w["steps"] / max(w["time"], 1e-9),
                "perf/data_wait_s": w["wait"] / max(w["steps"], 1), "perf/data_wait_frac": w["wait"] / max(w["time"], 1e-9)}

    def log(self, state: LoopState) -> None:
        """Rank 0 logs the step's metrics (evaluations included) on logging steps."""
        if self.run is not None and self.due(state.step, state.final):
            self.run.metrics(state.last_metrics, step=state.step)

    def finish(self, state: LoopState) -> None:
        from zv_ray.tracking import DIVERGED_TAG

        if self.run is None:
            return
        if state.step:
            self.run.tags({DIVERGED_TAG: "yes" if state.diverged else "no", "skipped_steps": str(state.skipped_total)})
        self.run.close()
