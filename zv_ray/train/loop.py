"""The per-worker training loop that Ray Train runs on every DDP worker (nanoGPT-style: one clear loop).

Each worker reads its shard of the object stream, picks input and supervision views per object,
predicts Gaussians from the inputs, splats them at every chosen view and steps on MSE + w * LPIPS.
Rank 0 alone logs to MLflow, writes checkpoints and images, evaluates and prints progress.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zv_ray.config import RunConfig, validate_dict
from zv_ray.io.atomic import atomic_path
from zv_ray.train.checkpoint import load_checkpoint, save_checkpoint
from zv_ray.train.faults import maybe_inject_fault
from zv_ray.train.schedule import lr_at
from zv_ray.train.step import clipped_step, set_lr
from zv_ray.train.views import ViewBatch, fixed_view_indices, make_view_batch, pick_view_indices


@dataclass
class LoopState:
    step: int = 0
    skipped_total: int = 0
    consecutive_skips: int = 0
    diverged: bool = False
    last_metrics: dict[str, float] = field(default_factory=dict)


def predict_and_render(model: torch.nn.Module, batch: ViewBatch, cfg: RunConfig) -> torch.Tensor:
    """Gaussians from the input views, splatted at every view of the batch: [B, V, 3, H, W]."""
    from zv_ray.splat.rasterize import render_gaussians

    device = batch.images.device
    use_bf16 = cfg.model.bf16 and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        gaussians = model(batch.input_images, batch.input_intrinsics, batch.input_c2w)
    res = batch.images.shape[-1]
    background = torch.tensor(cfg.train.background, dtype=torch.float32, device=device)
    rgb, _alpha = render_gaussians(gaussians.float(), batch.intrinsics, batch.c2w, res, res, background)
    return rgb.permute(0, 1, 4, 2, 3)  # [B, V, H, W, 3] -> [B, V, 3, H, W]


def psnr_of(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred.detach().clamp(0, 1) - target) ** 2).item()
    return -10.0 * math.log10(max(mse, 1e-10))


def image_grid(batch: ViewBatch, pred: torch.Tensor) -> np.ndarray:
    """First object of the batch: inputs on top, prediction and target of every view below. uint8 [H, W, 3]."""
    def row(views: torch.Tensor) -> torch.Tensor:  # [V, 3, H, W] -> [H, V * W, 3]
        return torch.cat(list(views.detach().float().clamp(0, 1).cpu()), dim=-1).permute(1, 2, 0)

    V = batch.images.shape[1]
    inputs = torch.ones_like(batch.images[0])
    inputs[: batch.num_inputs] = batch.images[0, : batch.num_inputs]
    grid = torch.cat([row(inputs), row(pred[0]), row(batch.images[0])], dim=0)
    assert grid.shape[1] == V * batch.images.shape[-1]
    return (grid.numpy() * 255).round().astype(np.uint8)


def evaluate_heldout(model: torch.nn.Module, val_iter, cfg: RunConfig, device: torch.device, lpips_net) -> dict[str, float]:
    """In-domain metrics on the fixed held-out Zeroverse objects, scored on the novel (non-input) views."""
    from zv_ray.eval.evaluate import image_scores, inference

    scores: dict[str, list[float]] = {}
    num_targets = max(cfg.train.num_target_views, 1)
    with inference(model) as bare:
        for raw in val_iter.iter_torch_batches(batch_size=cfg.train.batch_size_per_worker):
            b, num_views = raw["rgba"].shape[:2]
            idx = fixed_view_indices(num_views, cfg.train.num_input_views, num_targets, b)
            batch = make_view_batch(raw["rgba"], raw["intrinsics"], raw["c2w"], idx, cfg.train.num_input_views, cfg.train.resolution).to(device)
            pred = predict_and_render(bare, batch, cfg)[:, batch.num_inputs :].flatten(0, 1).float().clamp(0, 1)
            for key, values in image_scores(pred, batch.images[:, batch.num_inputs :].flatten(0, 1), lpips_net).items():
                scores.setdefault(key, []).extend(values.tolist())
    return {f"val/{k}": float(np.mean(v)) for k, v in scores.items()}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from rich.console import Console

    from zv_ray.losses.perceptual import load_lpips
    from zv_ray.losses.reconstruction import reconstruction_loss
    from zv_ray.model.gslrm import GSLRM

    cfg = validate_dict(RunConfig, loop_config["config"], source="train_loop_config")
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cluster.cpus_per_worker)))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = GSLRM(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    state = LoopState()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resume: same run, or automatic restart after a worker failure
        with checkpoint.as_directory() as ckpt_dir:
            payload = load_checkpoint(ckpt_dir)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state.step = payload["step"]
        state.skipped_total = int(payload["extra"].get("skipped_total", 0))
        torch.set_rng_state(payload["torch_rng"])
    elif tc.init_from:  # weights only (e.g. 256 -> 512 finetune): the schedule restarts at step 0
        model.load_state_dict(load_checkpoint(tc.init_from)["model"])

    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lpips_net = load_lpips(cfg.loss.vgg_weights, device=device) if cfg.loss.perceptual_weight > 0 else None

    logger = None
    console = Console(force_terminal=False, highlight=False, width=160)
    if rank == 0:
        from zv_ray.train.tracking import RunLogger

        logger = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"])
        if checkpoint is not None:  # one point per restore: resumes and restarts after failures are visible
            logger.metrics({"train/resumed_from_step": state.step}, step=state.step)

    real_objects = []
    if rank == 0 and tc.eval_objects:
        from zv_ray.eval.prepare import prepare_eval_views

        real_objects = prepare_eval_views(tc.eval_objects, cfg, tc.eval_max_objects, tc.eval_test_views)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 and loop_config.get("has_val") else None
    global_batch = tc.batch_size_per_worker * world
    window = {"time": 0.0, "wait": 0.0, "steps": 0}

    def report(extra: dict[str, float], *, with_checkpoint: bool) -> None:
        metrics = {**state.last_metrics, **extra, "step": state.step, "diverged": float(state.diverged)}
        if with_checkpoint and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(tmp, model=model, optimizer=optimizer, step=state.step, cfg=cfg,
                                extra={"skipped_total": state.skipped_total})
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    last_step = min(tc.steps, tc.stop_after or tc.steps)
    batch = None
    consumed_ids: list[int] = []  # audit of what this worker trained on since it (re)started
    while state.step < last_step and not state.diverged:
        batches_this_epoch = 0
        t_wait = time.perf_counter()
        for raw in train_shard.iter_torch_batches(batch_size=tc.batch_size_per_worker, drop_last=True):
            t_start = time.perf_counter()
            data_wait = t_start - t_wait
            batches_this_epoch += 1
            consumed_ids += raw["object_id"].tolist()
            maybe_inject_fault(state.step, rank)

            # View choice is a pure function of (seed, rank, step): a resumed run picks what an uninterrupted one would.
            view_rng = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, rank, state.step]).generate_state(1)[0]))
            idx = pick_view_indices(raw["rgba"].shape[1], tc.num_input_views, tc.num_target_views, raw["rgba"].shape[0], view_rng)
            batch = make_view_batch(raw["rgba"], raw["intrinsics"], raw["c2w"], idx, tc.num_input_views, tc.resolution).to(device)
            lr = lr_at(state.step, lr=tc.lr, min_lr=tc.min_lr, warmup_steps=tc.warmup_steps, total_steps=tc.steps)
            set_lr(optimizer, lr)

            pred = predict_and_render(model, batch, cfg)
            use_lpips = lpips_net if state.step >= cfg.loss.perceptual_start_step else None
            loss, terms = reconstruction_loss(pred.flatten(0, 1), batch.images.flatten(0, 1), use_lpips, cfg.loss.perceptual_weight)
            loss.backward()
            outcome = clipped_step(params, optimizer, grad_clip=tc.grad_clip, skip_grad_norm=tc.skip_grad_norm)
            state.skipped_total += int(outcome.skipped)
            state.consecutive_skips = state.consecutive_skips + 1 if outcome.skipped else 0
            state.diverged = state.consecutive_skips >= tc.max_consecutive_skips
            state.step += 1

            step_time = time.perf_counter() - t_wait
            window["time"] += step_time
            window["wait"] += data_wait
            window["steps"] += 1
            state.last_metrics = {
                "train/loss": float(loss.detach()),
                **{f"train/{k}": float(v) for k, v in terms.items()},
                "train/psnr": psnr_of(pred, batch.images),
                "train/grad_norm": outcome.grad_norm if math.isfinite(outcome.grad_norm) else float("nan"),
                "train/skipped_steps": float(state.skipped_total),
                "train/lr": lr,
            }

            is_last = state.step >= last_step or state.diverged
            if rank == 0 and (state.step % tc.image_every == 0 or is_last):
                logger.image(image_grid(batch, pred), f"images/step_{state.step:07d}.png")
            if state.step % tc.log_every == 0 or is_last:
                perf = {
                    "perf/samples_per_s": global_batch * window["steps"] / max(window["time"], 1e-9),
                    "perf/data_wait_s": window["wait"] / max(window["steps"], 1),
                    "perf/data_wait_frac": window["wait"] / max(window["time"], 1e-9),
                }
                if rank == 0 and (state.step % tc.eval_every == 0 or is_last):
                    if val_shard is not None:
                        perf.update(evaluate_heldout(model, val_shard, cfg, device, lpips_net))
                    if real_objects:
                        from zv_ray.eval.evaluate import evaluate_objects

                        perf.update(evaluate_objects(model, real_objects, cfg, lpips_net, prefix="gso"))
                state.last_metrics.update(perf)
                if rank == 0:
                    logger.metrics(state.last_metrics, step=state.step)
                    m = state.last_metrics
                    console.print(
                        f"step {state.step}/{tc.steps}  loss {m['train/loss']:.4f}  psnr {m['train/psnr']:.2f}"
                        + "".join(f"  {k} {m[k]:.2f}" for k in ("val/psnr", "gso/psnr") if k in m)
                        + f"  {m['perf/samples_per_s']:.2f} samples/s  data-wait {100 * m['perf/data_wait_frac']:.0f}%"
                        + f"  skipped {state.skipped_total}"
                    )
                window = {"time": 0.0, "wait": 0.0, "steps": 0}
                report({}, with_checkpoint=state.step % tc.checkpoint_every == 0 or is_last)
            elif state.step % tc.checkpoint_every == 0:
                report({}, with_checkpoint=True)
            if is_last:
                break
            t_wait = time.perf_counter()
        if batches_this_epoch == 0:
            raise RuntimeError(
                f"the training stream yielded no full batch: data.num_objects must be at least "
                f"batch_size_per_worker x num_workers = {global_batch}"
            )

    if loop_config.get("local_run_dir"):
        with atomic_path(Path(loop_config["local_run_dir"]) / "consumed_ids" / f"rank{rank}.json") as tmp:
            tmp.write_text(json.dumps(consumed_ids))
    if rank == 0 and batch is not None:
        logger.tags({"diverged": "yes" if state.diverged else "no", "skipped_steps": str(state.skipped_total)})
        _export_final(model, batch, logger, loop_config)


def _export_final(model, batch: ViewBatch, logger, loop_config: dict[str, Any]) -> None:
    """Predicted Gaussians of the last batch's first object as a 3DGS .ply artifact (and a local copy)."""
    from zv_ray.export.ply import save_ply

    with torch.no_grad():
        gaussians = getattr(model, "module", model)(batch.input_images[:1], batch.input_intrinsics[:1], batch.input_c2w[:1])
    with tempfile.TemporaryDirectory() as tmp:  # a local copy stays in the run folder when storage is local
        path = save_ply(Path(loop_config.get("local_run_dir") or tmp) / "gaussians.ply", gaussians.float())
        logger.artifact(path, "gaussians")
