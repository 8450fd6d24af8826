"""The per-worker training loop that Ray Train runs on every DDP worker (nanoGPT-style: one clear loop).

Each worker takes its share of every global step's samples (feed.py, in the order zv_ray.data.plan fixes) and
takes `train_step` on them (step.py). Around the step, components that own their schedule (torchtitan-style):
metrics.py logs, evaluator.py scores held-out objects, checkpointer.py reports and checkpoints; audit.py records what
each step consumed, drills.py holds the opt-in failure-drill checks; setup is in worker.py.
"""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from zv_ray.data.plan import DataPlan
    from zv_ray.eval.evaluate import load_lpips_or_reason
    from zv_ray.train.checkpointer import Checkpointer
    from zv_ray.train.drills import FaultDrill
    from zv_ray.train.evaluator import Evaluator
    from zv_ray.train.metrics import MetricsLogger
    from zv_ray.train.step import perceptual_net_for, train_step
    from zv_ray.train.worker import build_or_resume, setup_worker, steps, view_batch

    worker = setup_worker(loop_config)
    cfg, sources = worker.cfg, loop_config["sources"]
    plan = DataPlan.from_config(cfg, [s["count"] for s in sources])
    model, optimizer, state, resumed = build_or_resume(worker, plan)
    params = [p for p in model.parameters() if p.requires_grad]
    perceptual_net = perceptual_net_for(cfg, worker.device)
    # The evaluation's LPIPS metric: the loss network when it is LPIPS, else LPIPS if its weights are here.
    lpips_net = perceptual_net if cfg.loss.perceptual == "lpips" else load_lpips_or_reason(cfg, worker.device)[0]
    metrics = MetricsLogger(worker, loop_config, state, resumed, plan)
    evaluator = Evaluator(cfg, worker.rank, lpips_net, metrics.run)
    checkpointer = Checkpointer(cfg, worker.rank, plan)
    drill = FaultDrill.from_env(worker.rank)
    audit = None
    if cfg.train.audit_consumed_ids and loop_config.get("local_run_dir"):
        from zv_ray.train.audit import ConsumedLog

        audit = ConsumedLog.open(loop_config["local_run_dir"], worker.rank, state.step, worker.world)

    batch = None
    for samples in steps(worker, state, sources):
        metrics.step_started(samples.waited_s)
        if drill:
            drill.before_step(state.step)
        micro = [view_batch(worker, raw) for raw in samples.micro]
        result = train_step(model, optimizer, params, micro, cfg, state.step, perceptual_net)
        if audit:
            audit.append(state.step, samples.consumed)
        batch = micro[-1]
        state.advance(result.outcome, cfg.train.max_consecutive_skips)
        state.last_metrics = metrics.step_metrics(state, batch, result)
        if evaluator.due(state):
            state.last_metrics.update(evaluator.evaluate(model, state.step))
        metrics.log(state)
        checkpointer.after_step(model, optimizer, state)
    if batch is not None:
        checkpointer.export_gaussians(model, batch, metrics.run, loop_config.get("local_run_dir"))
    metrics.finish(state)
