"""`zv-ray demo` (what `make demo` runs): the whole system, tiny, on this machine.

Online Zeroverse generation -> tiny GS-LRM training on local Ray -> a short evaluation on real scanned
objects and held-out Zeroverse objects, all tracked in a local MLflow store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
SHARED_GSO = REPO.parent / "shared" / "eval" / "gso"


def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", help="Folder for runs, the MLflow store and eval results"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default: the tiny config's)"),
    objects: Optional[Path] = typer.Option(None, "--objects", help=f"Real objects to evaluate on (default {SHARED_GSO})"),
    eval_objects: int = typer.Option(3, "--eval-objects", min=1, help="How many real objects to evaluate"),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own output too (cluster.verbose)"),
) -> None:
    """Tiny end-to-end run: stream Zeroverse into training on local Ray, then evaluate; prints where everything is."""
    from rich.console import Console

    from zv_ray.cluster.session import ray_log_folder
    from zv_ray.config import load_config
    from zv_ray.eval.loading import load_model, pick_device
    from zv_ray.eval.protocol import EvalProtocol
    from zv_ray.eval.run import run_evaluation
    from zv_ray.train.trainer import run_training

    console = Console()
    out = out.resolve()
    objects = objects or (SHARED_GSO if SHARED_GSO.is_dir() else None)
    overrides = [f"cluster.storage_path={out / 'runs'}", f"cluster.run_name=demo-{time.strftime('%Y%m%d-%H%M%S')}"]
    overrides += [f"train.steps={steps}"] if steps else []
    overrides += ["cluster.verbose=true"] if verbose else []
    cfg = load_config(TINY_CONFIG, overrides)

    console.rule("[bold]1/2 training a tiny GS-LRM on streamed Zeroverse objects (local Ray)")
    started = time.perf_counter()
    outcome = run_training(cfg, console=console)
    console.print(f"trained {cfg.train.steps} steps in {time.perf_counter() - started:.0f} s")

    console.rule("[bold]2/2 evaluating on held-out Zeroverse" + (" and real scanned objects" if objects else ""))
    loaded = load_model(outcome.checkpoint, pick_device("cpu"))
    evaluation = run_evaluation(
        loaded, objects_dir=objects, zeroverse=4, out_dir=out / "eval" / cfg.cluster.run_name, attach=True,
        max_objects=eval_objects, protocol=EvalProtocol.for_config(cfg, num_test_views=8),
        tracking_uri=outcome.tracking_uri, console=console,
    )

    from zv_ray.eval.evaluate import mean_scores

    console.rule("[bold green]done")
    for suite, rows in evaluation.suites.items():
        m = mean_scores(rows)
        console.print(f"{suite:14s} PSNR {m['psnr']:.2f} dB vs {m['white_psnr']:.2f} for an all-white image: "
                      f"margin {m['psnr_over_white']:+.2f} dB over {len(rows)} objects")
    console.print(f"MLflow run     {outcome.mlflow_run_id}  (store {outcome.tracking_uri})", soft_wrap=True)
    console.print(f"  browse with  .venv/bin/mlflow ui --backend-store-uri {outcome.tracking_uri}", soft_wrap=True)
    console.print(f"checkpoint     {outcome.checkpoint}", soft_wrap=True)
    console.print(f"Gaussians .ply {outcome.ply_path}", soft_wrap=True)
    console.print(f"evaluation     {evaluation.out_dir}", soft_wrap=True)
    console.print(f"Ray's logs     {ray_log_folder()}  (--verbose shows them here)", soft_wrap=True)
