"""The per-worker training loop that Ray Train runs on every DDP worker (nanoGPT-style: one clear loop).

Each worker reads its shard of the object stream, predicts Gaussians from each sample's input views, splats
them at every chosen view and steps on MSE + w * perceptual loss, with clipping and skipping of exploding
steps. What the step triggers (logging, evaluation, reports, checkpoints) is in hooks.py; setup in worker.py.
"""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from zv_ray.inference.predict import predict_and_render
    from zv_ray.eval.evaluate import load_lpips_or_reason
    from zv_ray.losses.reconstruction import load_perceptual_loss, reconstruction_loss
    from zv_ray.train.hooks import Hooks
    from zv_ray.train.schedule import lr_at
    from zv_ray.train.step import clipped_step, set_lr
    from zv_ray.train.worker import batches, build_or_resume, setup_worker, view_batch

    worker = setup_worker(loop_config)
    cfg, tc = worker.cfg, worker.cfg.train
    model, optimizer, state, resumed = build_or_resume(worker)
    params = [p for p in model.parameters() if p.requires_grad]
    perceptual_net = load_perceptual_loss(cfg.loss, worker.device) if cfg.loss.perceptual_weight > 0 else None
    # The evaluation's LPIPS metric: the loss network when it is LPIPS, else LPIPS if its weights are here.
    lpips_net = perceptual_net if cfg.loss.perceptual == "lpips" else load_lpips_or_reason(cfg, worker.device)[0]
    hooks = Hooks(worker, loop_config, state, resumed, lpips_net)

    batch = None
    for raw, data_wait in batches(worker, state):
        hooks.before_step(raw, data_wait)
        batch = view_batch(worker, raw, state.step)
        lr = lr_at(state.step, lr=tc.lr, min_lr=tc.min_lr, warmup_steps=tc.warmup_steps, total_steps=tc.steps)
        set_lr(optimizer, lr)

        pred = predict_and_render(model, batch, cfg)
        perceptual = perceptual_net if state.step >= cfg.loss.perceptual_start_step else None
        loss, terms = reconstruction_loss(pred.flatten(0, 1), batch.images.flatten(0, 1), perceptual, cfg.loss.perceptual_weight)
        loss.backward()
        outcome = clipped_step(params, optimizer, grad_clip=tc.grad_clip, skip_grad_norm=tc.skip_grad_norm)
        state.advance(outcome, tc.max_consecutive_skips)
        hooks.after_step(model, optimizer, batch, pred, loss, terms, outcome, lr)
    hooks.finish(model, batch)
