"""What one Ray Train worker sets up before its loop: device, model and optimizer (fresh, resumed or
initialised from another run), and the samples it trains on step by step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from zv_ray.config import RunConfig, validate_dict
from zv_ray.data.plan import DataPlan
from zv_ray.inference.views import PosedViews, make_view_batch
from zv_ray.model.checkpoint import load_checkpoint
from zv_ray.train.feed import StepSamples
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


def build_or_resume(worker: Worker, plan: DataPlan) -> tuple[torch.nn.Module, torch.optim.Optimizer, LoopState, bool]:
    """(DDP model, optimizer, state, resumed): from Ray Train's checkpoint when restarting, resuming or resizing; its
    data position is its step, which means the same samples only under the same data plan."""
    import ray.train
    import ray.train.torch

    payload = None
    if (checkpoint := ray.train.get_checkpoint()) is not None:
        with checkpoint.as_directory() as ckpt_dir:
            payload = load_checkpoint(ckpt_dir)
        stored = payload["extra"].get("data_plan")
        if stored is not None and stored != plan.fingerprint():
            raise RuntimeError(
                f"the checkpoint's data plan {stored} is not this run's {plan.fingerprint()}: a Parquet source changed "
                f"size since the run started, so step {payload['step']} would train on other samples; restore the "
                "dataset, or start a new run (train.init_from) on the new one"
            )
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


def steps(worker: Worker, state: LoopState, sources: list[dict]) -> Iterator[StepSamples]:
    """This worker's samples for each step from the restored one to the run's last (zv_ray.train.feed)."""
    from zv_ray.train.feed import open_feed

    feed = open_feed(worker.cfg, sources, worker.rank, worker.world, state.step, state.last_step)
    while not state.final:
        yield feed.take(state.step)


def view_batch(worker: Worker, raw: dict[str, torch.Tensor]) -> PosedViews:
    """A micro-batch of samples (their views chosen upstream, records.sample_picks) as a model batch on the device,
    resized to train.resolution."""
    tc = worker.cfg.train
    if worker.device.type == "cuda":
        raw = {k: v.pin_memory() for k, v in raw.items()}
    return make_view_batch(raw["rgb"], raw["intrinsics"], raw["c2w"], None, tc.num_input_views, tc.resolution, worker.device)
