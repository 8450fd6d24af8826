"""Ray Train reports and checkpoints, and the run's final Gaussians.

A report is a barrier across ranks: every rank reports on every logging step and every checkpoint step (both
pure functions of the step), carrying its metrics; only rank 0 attaches the checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from zv_ray.config import RunConfig
from zv_ray.data.plan import DataPlan
from zv_ray.inference.views import PosedViews
from zv_ray.model.checkpoint import save_checkpoint
from zv_ray.train.schedule import Every
from zv_ray.train.worker import LoopState


class Checkpointer:
    def __init__(self, cfg: RunConfig, rank: int, plan: DataPlan):
        self.cfg, self.rank0, self.plan = cfg, rank == 0, plan
        self.log_due, self.checkpoint_due = Every(cfg.train.log_every), Every(cfg.train.checkpoint_every)

    def reports(self, state: LoopState) -> tuple[bool, bool]:
        """(report, with a checkpoint) at this state: the same answer on every rank."""
        checkpoint = self.checkpoint_due(state.step, state.final)
        return self.log_due(state.step, state.final) or checkpoint, checkpoint

    def after_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
        import ray.train

        report, checkpoint = self.reports(state)
        if not report:
            return
        metrics = {**state.last_metrics, "step": state.step, "diverged": float(state.diverged)}
        if not (checkpoint and self.rank0):
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(tmp, model=model, optimizer=optimizer, step=state.step, cfg=self.cfg,
                            # The data position is the step: under the same plan it names the next samples exactly.
                            extra={"skipped_total": state.skipped_total, "data_plan": self.plan.fingerprint()})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def export_gaussians(self, model: torch.nn.Module, batch: PosedViews, run, local_run_dir: str | None) -> None:
        """Rank 0: the last batch's first object as a 3DGS .ply, to the MLflow run (and the run folder when local)."""
        from zv_ray.export.ply import save_ply
        from zv_ray.inference.predict import predict_gaussians

        if not self.rank0:
            return
        first = PosedViews(batch.images[:1], batch.intrinsics[:1], batch.c2w[:1], batch.num_inputs)
        with torch.no_grad():
            gaussians = predict_gaussians(getattr(model, "module", model), first, self.cfg)
        with tempfile.TemporaryDirectory() as tmp:
            run.artifact(save_ply(Path(local_run_dir or tmp) / "gaussians.ply", gaussians), "gaussians")
