"""`zv-ray train CONFIG [--set key=value ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train(
    config: Path = typer.Argument(..., help="Run config YAML, e.g. configs/tiny.yaml"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value: section.key=value"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run with the same storage_path and run_name"),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own output too (cluster.verbose)"),
) -> None:
    """Train GS-LRM on streamed Zeroverse objects with Ray Train (DDP), tracked in MLflow."""
    from rich.console import Console

    from zv_ray.cluster.session import ray_log_folder
    from zv_ray.config import load_config
    from zv_ray.train.progress import describe
    from zv_ray.train.trainer import run_training

    console = Console()
    cfg = load_config(config, [*(overrides or []), *(["cluster.verbose=true"] if verbose else [])])
    outcome = run_training(cfg, resume=resume, console=console)
    m = outcome.metrics
    console.print(f"[bold green]training finished[/] {m.get('step', '?')} steps  " + describe(m))
    console.print(f"run folder: {outcome.run_dir}")
    console.print(f"checkpoint: {outcome.checkpoint}")
    console.print(f"MLflow: {outcome.tracking_uri}  run id {outcome.mlflow_run_id}")
    if outcome.ply_path:
        console.print(f"Gaussians (.ply): {outcome.ply_path}")
    console.print(f"Ray's logs: {ray_log_folder()}  (--verbose shows them here)")
