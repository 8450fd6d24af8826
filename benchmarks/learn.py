"""Does a GS-LRM trained by zv-ray reconstruct? Train for a fixed budget, then score novel views.

    .venv/bin/python benchmarks/learn.py                                   # configs/tiny.yaml, 30 CPU-minutes
    .venv/bin/python benchmarks/learn.py --threads 1 --minutes 2 --set data.num_objects=200 --set train.lr=3e-3
                                                                           # one recipe-search trial
    .venv/bin/python benchmarks/learn.py --device cuda --minutes 5         # the same recipe on a GPU (wall clock)

Standalone (no Ray, so a trial starts in seconds) but built only from the library: Zeroverse objects
generated and rendered by zv-ray's renderer (`render_object`, ids from data.first_object_id, a pool of
data.num_objects revisited at random), the trainer's view sampling and its `train_step` (model, rasterizer,
loss with the perceptual gate, clipped step), with the schedule cosine over the budget instead of train.steps, and `zv_ray.eval` scoring on the
evaluation protocol: the fixed held-out Zeroverse set (data.val_zeroverse) and the shared GSO scans.
Measured in the same run and printed side by side: the all-white image, the untrained model and the
trained model, with margins over white, and a learning curve. Grids and a JSON summary go to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from zv_ray.config import RunConfig, load_config
from zv_ray.eval.evaluate import ObjectResult, evaluate_objects
from zv_ray.eval.prepare import EvalObject, iter_zeroverse_objects, prepare_eval_views
from zv_ray.eval.protocol import EvalProtocol
from zv_ray.eval.report import comparison_grid
from zv_ray.inference.views import make_view_batch, pick_training_views
from zv_ray.io.atomic import atomic_path
from zv_ray.model import GSLRM, num_params
from zv_ray.model.checkpoint import save_checkpoint
from zv_ray.data.records import pixels_config_hash, render_object
from zv_ray.render.renderer import Renderer
from zv_ray.train.schedule import lr_at
from zv_ray.train.step import build_optimizer, perceptual_net_for, train_step

REPO = Path(__file__).resolve().parents[1]
GSO = REPO.parent / "shared" / "eval" / "gso"
# Cosine over the budget, in this many schedule ticks.
_TICKS = 10_000


def render_pool(cfg: RunConfig, renderer: Renderer, cache: Path) -> list[dict]:
    """The training objects, rendered once per (pixel settings, seed, ids) and cached: trials of a search
    that change only the model or optimizer reuse them."""
    first, count = cfg.data.first_object_id, cfg.data.num_objects
    path = cache / f"{pixels_config_hash(cfg)}_s{cfg.seed}_{first}_{count}.npz"
    keys = ("rgba", "intrinsics", "c2w")
    if path.is_file():
        with np.load(path) as f:
            return [dict(zip(keys, v)) for v in zip(*(f[k] for k in keys))]
    pool = [render_object(cfg.seed, i, cfg, renderer) for i in range(first, first + count)]
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            np.savez(f, **{k: np.stack([o[k] for o in pool]) for k in keys})
    return pool


def score(model: torch.nn.Module, suites: dict[str, list[EvalObject]], cfg: RunConfig
          ) -> tuple[dict[str, float], dict[str, list[ObjectResult]]]:
    """Every suite's mean metrics, and each object's result (its images: the last call's make the grids)."""
    metrics, results = {}, {}
    for s, objs in suites.items():
        suite_metrics, results[s] = evaluate_objects(model, objs, cfg, prefix=s, keep=len(objs))
        metrics.update(suite_metrics)
    return metrics, results


def train(model, optimizer, pool, cfg: RunConfig, device, budget_s: float, clock, on_checkpoint) -> dict:
    """The loop's `train_step` until budget_s of training time on `clock` (evaluation excluded) has passed;
    on_checkpoint(step, spent, loss) at each quarter of the budget, the last at the final step."""
    tc = cfg.train
    rng, view_rng = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    perceptual_net = perceptual_net_for(cfg, device)
    step, spent, next_mark, losses, started = 0, 0.0, 1, [], time.perf_counter()
    while spent < budget_s:
        t0 = clock()
        objs = [pool[rng.randrange(len(pool))] for _ in range(tc.global_batch_size)]
        stack = {k: torch.from_numpy(np.stack([o[k] for o in objs])) for k in ("rgba", "intrinsics", "c2w")}
        idx = pick_training_views(stack["c2w"], tc, view_rng)
        batch = make_view_batch(stack["rgba"], stack["intrinsics"], stack["c2w"], idx, tc.num_input_views, tc.resolution, device)
        frac = spent / budget_s
        # Warm-up over train.warmup_steps steps, then cosine over the budget.
        tick, warmup = (step, tc.warmup_steps) if step < tc.warmup_steps else (int(frac * _TICKS), 0)
        lr = lr_at(tick, lr=tc.lr, min_lr=tc.min_lr, warmup_steps=warmup, total_steps=_TICKS)
        result = train_step(model, optimizer, params, batch, cfg, step, perceptual_net, lr=lr)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step += 1
        spent += clock() - t0
        losses.append(result.loss)
        if spent >= next_mark * budget_s / 4:  # a step past several marks scores once; the last step always scores
            on_checkpoint(step, spent, float(np.mean(losses[-50:])))
            next_mark = int(4 * spent / budget_s) + 1
    return {"steps": step, "train_s": spent, "s_per_step": spent / max(step, 1), "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (evaluation not counted)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="cpu (default on CPU): the budget is this process's CPU time / --threads, which a busy "
                        "shared machine does not shrink (on an idle one it is close to wall time); wall (default on "
                        "GPU): elapsed time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--val-objects", type=int, default=8, help="held-out Zeroverse objects scored")
    parser.add_argument("--gso-objects", type=int, default=10, help="shared GSO objects scored (0: none)")
    parser.add_argument("--test-views", type=int, default=8, help="test views per evaluation object")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "learn")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "learn_cache", help="rendered training pools")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    cfg = load_config(args.config, args.set)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"config {args.config} {' '.join(args.set)}")

    t0 = time.perf_counter()
    with Renderer.from_config(cfg.render) as renderer:
        pool = render_pool(cfg, renderer, args.cache)
        protocol = EvalProtocol.for_config(cfg, num_test_views=args.test_views)
        suites = {"zeroverse": list(iter_zeroverse_objects(cfg, args.val_objects, protocol, renderer=renderer))}
    if args.gso_objects and GSO.is_dir():
        suites["gso"] = prepare_eval_views(GSO, cfg, args.gso_objects, args.test_views)
    print(f"rendered {len(pool)} training objects and {sum(map(len, suites.values()))} evaluation objects "
          f"in {time.perf_counter() - t0:.0f} s")

    torch.manual_seed(cfg.seed)
    model = GSLRM(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.train)
    untrained, latest = score(model, suites, cfg)
    curve = [{"step": 0, "train_s": 0.0, "loss": None, **untrained}]

    def on_checkpoint(step: int, spent: float, loss: float) -> None:
        nonlocal latest
        metrics, latest = score(model, suites, cfg)
        curve.append({"step": step, "train_s": spent, "loss": loss, **metrics})
        print(f"  step {step:6d}  {spent / 60:5.1f} min  loss {loss:.4f}  " + "  ".join(
            f"{s} {curve[-1][f'{s}/psnr']:.2f} dB ({curve[-1][f'{s}/psnr_over_white']:+.2f})" for s in suites))

    print(f"training {num_params(model) / 1e6:.2f} M parameters for {args.minutes:g} {args.clock} min on {device} "
          f"({args.threads} threads)")
    # CPU seconds of every thread of this process, in per-thread units.
    clock = (lambda: time.process_time() / args.threads) if args.clock == "cpu" else time.perf_counter
    stats = train(model, optimizer, pool, cfg, device, 60 * args.minutes, clock, on_checkpoint)
    trained = curve[-1]

    print(f"\n{stats['steps']} steps, {stats['s_per_step']:.3f} {args.clock} s/step ({stats['wall_s'] / 60:.1f} wall min); novel views at {cfg.train.resolution} px "
          f"({protocol.num_inputs} inputs, {args.test_views} test views per object)")
    print(f"{'suite':10s} {'objects':>7s} {'white':>7s} {'untrained':>9s} {'trained':>8s} {'margin':>7s}  SSIM white / trained")
    for s in suites:
        print(f"{s:10s} {len(suites[s]):7d} {untrained[f'{s}/white_psnr']:7.2f} {untrained[f'{s}/psnr']:9.2f} "
              f"{trained[f'{s}/psnr']:8.2f} {trained[f'{s}/psnr_over_white']:+7.2f}  "
              f"{trained[f'{s}/white_ssim']:.3f} / {trained[f'{s}/ssim']:.3f}")

    # The budget ends on a scoring (train calls on_checkpoint at its last step): its results are the trained model's.
    for s, results in latest.items():
        (out / "grids" / s).mkdir(parents=True, exist_ok=True)
        for r in results:
            iio.imwrite(out / "grids" / s / f"{r.name}.png", comparison_grid(r.inputs, r.pred, r.target))
    save_checkpoint(out / "checkpoint", model=model, optimizer=None, step=stats["steps"], cfg=cfg)
    summary = {"config": args.config, "overrides": args.set, "minutes": args.minutes, "device": str(device), **stats,
               "curve": curve}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"grids, checkpoint and summary.json in {out}")


if __name__ == "__main__":
    main()
