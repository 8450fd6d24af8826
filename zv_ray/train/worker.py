"""What one Ray Train worker sets up before its loop: device, model and optimizer (fresh, resumed or
initialised from another run), and the stream of training batches it consumes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from zv_ray.config import RunConfig, validate_dict
from zv_ray.inference.views import PosedViews, make_view_batch
from zv_ray.model.checkpoint import load_checkpoint
from zv_ray.train.step import StepOutcome, build_optimizer


@dataclass
class Worker:
    cfg: RunConfig
    rank: int
    world: int
    device: torch.device


@dataclass
class LoopState:
    last_step: int  # where this invocation stops (schedule.last_step)
    step: int = 0
    skipped_total: int = 0
    consecutive_skips: int = 0
    diverged: bool = False
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """The loop ends after this step: the last step, or divergence (train.max_consecutive_skips)."""
        return self.step >= self.last_step or self.diverged

    def advance(self, outcome: StepOutcome, max_consecutive_skips: int) -> None:
        self.skipped_total += int(outcome.skipped)
        self.consecutive_skips = self.consecutive_skips + 1 if outcome.skipped else 0
        self.diverged = self.consecutive_skips >= max_consecutive_skips
        self.step += 1


def setup_worker(loop_config: dict[str, Any]) -> Worker:
    import ray.train
    import ray.train.torch

    cfg = validate_dict(RunConfig, loop_config["config"], source="train_loop_config")
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cluster.cpus_per_worker)))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), device)


def build_or_resume(worker: Worker) -> tuple[torch.nn.Module, torch.optim.Optimizer, LoopState, bool]:
    """(DDP model, optimizer, state, resumed): from Ray Train's checkpoint when restarting or resuming."""
    import ray.train
    import ray.train.torch

    payload = None
    if (checkpoint := ray.train.get_checkpoint()) is not None:
        with checkpoint.as_directory() as ckpt_dir:
            payload = load_checkpoint(ckpt_dir)
    model, optimizer, state = build_training_state(worker.cfg, payload, ray.train.torch.prepare_model)
    return model, optimizer, state, payload is not None


def build_training_state(
    cfg: RunConfig, payload: dict[str, Any] | None, prepare: Callable[[torch.nn.Module], torch.nn.Module]
) -> tuple[torch.nn.Module, torch.optim.Optimizer, LoopState]:
    """Model, optimizer and loop state from a checkpoint `payload`, else fresh weights (or train.init_from's,
    weights only: a 256 -> 512 finetune restarts its schedule at step 0). `prepare` moves (and wraps) the model,
    as Ray Train's prepare_model does; the optimizer is built after it, so loaded AdamW state lands on the
    parameters' device."""
    from zv_ray.model.gslrm import GSLRM
    from zv_ray.train.schedule import last_step

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model, state = GSLRM(cfg.model), LoopState(last_step(cfg.train))
    if payload is not None:
        model.load_state_dict(payload["model"])
        state.step, state.skipped_total = payload["step"], int(payload["extra"].get("skipped_total", 0))
        torch.set_rng_state(payload["torch_rng"])
    elif cfg.train.init_from:
        model.load_state_dict(load_checkpoint(cfg.train.init_from)["model"])
    model = prepare(model)
    optimizer = build_optimizer(model, cfg.train)
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return model, optimizer, state


def batches(worker: Worker, state: LoopState) -> Iterator[tuple[dict, float]]:
    """(raw batch, seconds waited for it), epoch after epoch, until the run's last step."""
    import ray.train

    cfg, tc = worker.cfg, worker.cfg.train
    shard = ray.train.get_dataset_shard("train")
    while not state.final:
        # uint8 batches land on the device from a background thread (pinned first on CUDA), prefetched; a
        # bounded shuffle window spreads each object's samples over many batches.
        epoch = shard.iter_torch_batches(
            batch_size=tc.batch_size_per_worker, drop_last=True, device=worker.device,
            pin_memory=worker.device.type == "cuda", prefetch_batches=cfg.data.prefetch_batches,
            local_shuffle_buffer_size=cfg.data.shuffle_window or None, local_shuffle_seed=cfg.seed + worker.rank,
        )
        yielded, waited_from = 0, time.perf_counter()
        for raw in epoch:
            yielded += 1
            yield raw, time.perf_counter() - waited_from
            if state.final:
                return
            waited_from = time.perf_counter()
        if yielded == 0:
            raise RuntimeError(
                "the training stream yielded no full batch: data.num_objects must be at least "
                f"batch_size_per_worker x num_workers = {tc.batch_size_per_worker * worker.world}"
            )


def view_batch(worker: Worker, raw: dict) -> PosedViews:
    """A batch of samples (their views already chosen upstream, records.sample_picks) as a model batch on the
    device, resized to train.resolution."""
    tc = worker.cfg.train
    return make_view_batch(raw["rgb"], raw["intrinsics"], raw["c2w"], None, tc.num_input_views, tc.resolution, worker.device)
