"""Everything a training step triggers besides the step: metrics windows, rank 0's MLflow logging, images and
evaluations, Ray Train reports and checkpoints, the failure drill, the consumed-id audit and the final .ply.

Ray Train's report is a barrier: `due` depends only on the step and the state, so every rank reports the same
number of times; only what rank 0 adds (evaluations, images, the checkpoint itself) differs.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zv_ray.inference.views import ViewBatch
from zv_ray.io.atomic import atomic_path
from zv_ray.model.checkpoint import save_checkpoint
from zv_ray.train.faults import maybe_inject_fault
from zv_ray.train.step import StepOutcome
from zv_ray.train.worker import LoopState, Worker


@dataclass(frozen=True)
class Due:
    log: bool  # report metrics (every rank), log them (rank 0)
    checkpoint: bool
    evaluate: bool  # rank 0 scores its evaluation suites
    image: bool  # rank 0 logs a prediction grid


def due(step: int, state: LoopState, tc) -> Due:
    """What this step triggers: a pure function of the step and the state, the same on every rank."""
    last = step >= min(tc.steps, tc.stop_after or tc.steps) or state.diverged
    log = step % tc.log_every == 0 or last
    return Due(log=log, checkpoint=step % tc.checkpoint_every == 0 or last,
               evaluate=log and (step % tc.eval_every == 0 or last), image=step % tc.image_every == 0 or last)


def psnr_of(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred.detach().clamp(0, 1) - target) ** 2).item()
    return -10.0 * math.log10(max(mse, 1e-10))


def image_grid(batch: ViewBatch, pred: torch.Tensor) -> np.ndarray:
    """First object of the batch: inputs on top, prediction and target of every view below. uint8 [H, W, 3]."""
    def row(views: torch.Tensor) -> torch.Tensor:  # [V, 3, H, W] -> [H, V * W, 3]
        return torch.cat(list(views.detach().float().clamp(0, 1).cpu()), dim=-1).permute(1, 2, 0)

    inputs = torch.ones_like(batch.images[0])
    inputs[: batch.num_inputs] = batch.images[0, : batch.num_inputs]
    grid = torch.cat([row(inputs), row(pred[0]), row(batch.images[0])], dim=0)
    return (grid.numpy() * 255).round().astype(np.uint8)


class Hooks:
    def __init__(self, worker: Worker, loop_config: dict[str, Any], state: LoopState, resumed: bool, lpips_net):
        self.worker, self.cfg, self.state, self.lpips_net = worker, worker.cfg, state, lpips_net
        self.loop_config = loop_config
        self.rank0 = worker.rank == 0
        self.window = {"time": 0.0, "wait": 0.0, "steps": 0}
        self.consumed_ids: list[int] = []  # audit of what this worker trained on since it (re)started
        self.logger = None
        self.suites: dict[str, list] = {}
        if self.rank0:
            from zv_ray.tracking import RunLogger

            self.logger = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"], system_metrics_every_s=10.0)
            if resumed:  # one point per restore: resumes and restarts after failures are visible
                self.logger.metrics({"train/resumed_from_step": state.step}, step=state.step)
            self.suites = self._evaluation_suites()

    def _evaluation_suites(self) -> dict[str, list]:
        """Rendered once, under the protocol `zv-ray eval` uses: the fixed held-out Zeroverse set ("val", with
        settings no sweep changes) and real scans ("gso")."""
        from zv_ray.eval.prepare import iter_zeroverse_objects, prepare_eval_views
        from zv_ray.eval.protocol import EvalProtocol

        cfg, tc, suites = self.cfg, self.cfg.train, {}
        if cfg.data.num_val_objects:
            protocol = EvalProtocol.for_config(cfg, num_test_views=tc.eval_test_views)
            suites["val"] = list(iter_zeroverse_objects(cfg, cfg.data.num_val_objects, protocol))
        if tc.eval_objects:
            suites["gso"] = prepare_eval_views(tc.eval_objects, cfg, tc.eval_max_objects, tc.eval_test_views)
        return suites

    def before_step(self, raw: dict, data_wait: float) -> None:
        self.step_started = time.perf_counter() - data_wait
        self.window["wait"] += data_wait
        self.consumed_ids += raw["object_id"].tolist()
        maybe_inject_fault(self.state.step, self.worker.rank)

    def after_step(self, model, optimizer, batch: ViewBatch, pred, loss, terms, outcome: StepOutcome, lr: float) -> None:
        self.window["time"] += time.perf_counter() - self.step_started
        self.window["steps"] += 1
        self.state.last_metrics = {
            "train/loss": float(loss.detach()),
            **{f"train/{k}": float(v) for k, v in terms.items()},
            "train/psnr": psnr_of(pred, batch.images),
            "train/grad_norm": outcome.grad_norm if math.isfinite(outcome.grad_norm) else float("nan"),
            "train/skipped_steps": float(self.state.skipped_total),
            "train/lr": lr,
            "train/step": float(self.state.step),  # the driver's progress display reads it
        }
        now = due(self.state.step, self.state, self.cfg.train)
        if self.rank0 and now.image:
            self.logger.image(image_grid(batch, pred), f"images/step_{self.state.step:07d}.png")
        if now.log:
            self.state.last_metrics.update(self._perf())
            if self.rank0 and now.evaluate:
                self.state.last_metrics.update(self._evaluate(model))
            if self.rank0:
                self.logger.metrics(self.state.last_metrics, step=self.state.step)
        if now.log or now.checkpoint:
            self._report(model, optimizer, checkpoint=now.checkpoint)

    def _evaluate(self, model) -> dict[str, float]:
        """Every suite's scores; each suite's predictions go to the run as predictions/<suite>.npz (overwritten at
        every evaluation), which `zv-ray compare` lays side by side across a sweep's trials."""
        from zv_ray.eval.evaluate import evaluate_objects
        from zv_ray.eval.predictions import MAX_OBJECTS, pack_predictions, save_predictions

        metrics = {}
        for suite, objects in self.suites.items():
            scores, kept = evaluate_objects(model, objects, self.cfg, self.lpips_net, prefix=suite, keep=MAX_OBJECTS)
            metrics.update(scores)
            with tempfile.TemporaryDirectory() as tmp:
                self.logger.artifact(save_predictions(Path(tmp) / f"{suite}.npz", pack_predictions(kept, self.state.step)),
                                     "predictions")
        return metrics

    def _perf(self) -> dict[str, float]:
        w, global_batch = self.window, self.cfg.train.batch_size_per_worker * self.worker.world
        self.window = {"time": 0.0, "wait": 0.0, "steps": 0}
        return {"perf/samples_per_s": global_batch * w["steps"] / max(w["time"], 1e-9),
                "perf/data_wait_s": w["wait"] / max(w["steps"], 1), "perf/data_wait_frac": w["wait"] / max(w["time"], 1e-9)}

    def _report(self, model, optimizer, *, checkpoint: bool) -> None:
        import ray.train

        metrics = {**self.state.last_metrics, "step": self.state.step, "diverged": float(self.state.diverged)}
        if not (checkpoint and self.rank0):
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(tmp, model=model, optimizer=optimizer, step=self.state.step, cfg=self.cfg,
                            extra={"skipped_total": self.state.skipped_total})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def finish(self, model, batch: ViewBatch | None) -> None:
        """The id audit (local runs), then rank 0's final tags and the last batch's Gaussians as a 3DGS .ply."""
        from zv_ray.tracking import DIVERGED_TAG

        run_dir = self.loop_config.get("local_run_dir")
        if run_dir:
            with atomic_path(Path(run_dir) / "consumed_ids" / f"rank{self.worker.rank}.json") as tmp:
                tmp.write_text(json.dumps(self.consumed_ids))
        if not self.rank0:
            return
        if batch is not None:
            self.logger.tags({DIVERGED_TAG: "yes" if self.state.diverged else "no",
                              "skipped_steps": str(self.state.skipped_total)})
            self._export_ply(model, batch, run_dir)
        self.logger.close()

    def _export_ply(self, model, batch: ViewBatch, run_dir: str | None) -> None:
        from zv_ray.export.ply import save_ply

        with torch.no_grad():
            gaussians = getattr(model, "module", model)(batch.input_images[:1], batch.input_intrinsics[:1],
                                                        batch.input_c2w[:1])
        with tempfile.TemporaryDirectory() as tmp:  # a local copy stays in the run folder when storage is local
            self.logger.artifact(save_ply(Path(run_dir or tmp) / "gaussians.ply", gaussians.float()), "gaussians")
