"""Rank 0's evaluations during training, on logging steps every train.eval_every steps (and at the end): the
fixed held-out Zeroverse set ("val", with settings no sweep changes) and real scans ("gso"), under the protocol
`zv-ray eval` uses. The suites are rendered at the first evaluation, not before the first step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from zv_ray.config import RunConfig
from zv_ray.train.schedule import Every
from zv_ray.train.worker import LoopState


class Evaluator:
    def __init__(self, cfg: RunConfig, rank: int, lpips_net: torch.nn.Module | None, run):
        self.cfg, self.lpips_net, self.run = cfg, lpips_net, run  # run: rank 0's RunLogger (None elsewhere)
        self.enabled = rank == 0 and bool(cfg.data.num_val_objects or cfg.train.eval_objects)
        self.log_due, self.eval_due = Every(cfg.train.log_every), Every(cfg.train.eval_every)
        self._suites: dict[str, list] | None = None

    def due(self, state: LoopState) -> bool:
        # Only on logging steps: the scores travel with that step's report and MLflow metrics.
        return self.enabled and self.log_due(state.step, state.final) and self.eval_due(state.step, state.final)

    def suites(self) -> dict[str, list]:
        if self._suites is None:
            from zv_ray.eval.prepare import iter_zeroverse_objects, prepare_eval_views
            from zv_ray.eval.protocol import EvalProtocol

            cfg, tc, self._suites = self.cfg, self.cfg.train, {}
            if cfg.data.num_val_objects:
                protocol = EvalProtocol.for_config(cfg, num_test_views=tc.eval_test_views)
                self._suites["val"] = list(iter_zeroverse_objects(cfg, cfg.data.num_val_objects, protocol))
            if tc.eval_objects:
                self._suites["gso"] = prepare_eval_views(tc.eval_objects, cfg, tc.eval_max_objects, tc.eval_test_views)
        return self._suites

    def evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Every suite's mean scores; each suite's per-object scores and predictions go to the run as
        scores/<suite>.json and predictions/<suite>.npz (overwritten at every evaluation), which `zv-ray compare`
        pairs object by object and lays side by side across a sweep's trials."""
        from zv_ray.eval.evaluate import score_objects, summarize
        from zv_ray.eval.object_scores import ARTIFACT_DIR, ObjectScores, save_object_scores
        from zv_ray.eval.predictions import MAX_OBJECTS, pack_predictions, save_predictions

        metrics = {}
        for suite, objects in self.suites().items():
            scores, kept = score_objects(model, objects, self.cfg, self.lpips_net, keep=MAX_OBJECTS)
            metrics.update(summarize(scores.values(), suite))
            with tempfile.TemporaryDirectory() as tmp:
                self.run.artifact(save_object_scores(Path(tmp) / f"{suite}.json", ObjectScores(suite, step, scores)),
                                  ARTIFACT_DIR)
                self.run.artifact(save_predictions(Path(tmp) / f"{suite}.npz", pack_predictions(kept, step)), "predictions")
        return metrics
