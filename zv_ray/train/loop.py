"""The per-worker training loop that Ray Train runs on every DDP worker (nanoGPT-style: one clear loop).

Each worker reads its shard of the object stream and takes `train_step` on each batch (step.py). Around the
step, components that own their schedule (torchtitan-style): metrics.py logs, evaluator.py scores held-out
objects, checkpointer.py reports and checkpoints; drills.py holds the opt-in failure-drill checks; setup is in
worker.py.
"""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from zv_ray.eval.evaluate import load_lpips_or_reason
    from zv_ray.train.checkpointer import Checkpointer
    from zv_ray.train.drills import FaultDrill, IdAudit
    from zv_ray.train.evaluator import Evaluator
    from zv_ray.train.metrics import MetricsLogger
    from zv_ray.train.step import perceptual_net_for, train_step
    from zv_ray.train.worker import batches, build_or_resume, setup_worker, view_batch

    worker = setup_worker(loop_config)
    cfg = worker.cfg
    model, optimizer, state, resumed = build_or_resume(worker)
    params = [p for p in model.parameters() if p.requires_grad]
    perceptual_net = perceptual_net_for(cfg, worker.device)
    # The evaluation's LPIPS metric: the loss network when it is LPIPS, else LPIPS if its weights are here.
    lpips_net = perceptual_net if cfg.loss.perceptual == "lpips" else load_lpips_or_reason(cfg, worker.device)[0]
    metrics = MetricsLogger(worker, loop_config, state, resumed)
    evaluator = Evaluator(cfg, worker.rank, lpips_net, metrics.run)
    checkpointer = Checkpointer(cfg, worker.rank)
    drill = FaultDrill.from_env(worker.rank)
    audit = IdAudit.for_run(cfg.train.audit_consumed_ids, loop_config.get("local_run_dir"), worker.rank)

    batch = None
    for raw, data_wait in batches(worker, state):
        metrics.step_started(data_wait)
        if drill:
            drill.before_step(state.step)
        if audit:
            audit.record(raw["object_id"])
        batch = view_batch(worker, raw)
        result = train_step(model, optimizer, params, batch, cfg, state.step, perceptual_net)
        state.advance(result.outcome, cfg.train.max_consecutive_skips)
        state.last_metrics = metrics.step_metrics(state, batch, result)
        if evaluator.due(state):
            state.last_metrics.update(evaluator.evaluate(model, state.step))
        metrics.log(state)
        checkpointer.after_step(model, optimizer, state)
    if audit:
        audit.write()
    if batch is not None:
        checkpointer.export_gaussians(model, batch, metrics.run, loop_config.get("local_run_dir"))
    metrics.finish(state)
