"""`zv-ray sweep SWEEP_CONFIG [--resume]` and `zv-ray compare PARENT_RUN_ID_OR_SWEEP_NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _console():
    """Rich console; 160 columns when not a terminal (logs, CI) instead of rich's 80, so tables stay whole."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_progress_to(console) -> None:
    """The sweep's per-trial lines (zv_ray.sweep.progress) go to this console; the callback never holds it."""
    import logging

    class ConsoleLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(record.getMessage(), soft_wrap=True, highlight=False)

    from zv_ray.tune.sweep import progress_log

    progress_log.handlers[:] = [ConsoleLines()]
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False


def sweep(
    config: Path = typer.Argument(..., help="Sweep YAML, e.g. configs/sweeps/augmentation_tiny.yaml"),
    resume: bool = typer.Option(
        False, "--resume", help="Finish an interrupted sweep of the same name (completed trials are kept)"
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's and Tune's own output too (cluster.verbose)"),
) -> None:
    """Run a Ray Tune sweep over run-config keys; each trial trains GS-LRM and logs an MLflow child run."""
    from zv_ray.config.sweep import load_sweep_config
    from zv_ray.tune.compare import compare as compare_sweep
    from zv_ray.tune.compare import tables
    from zv_ray.tune.sweep import run_sweep

    console = _console()
    cfg = load_sweep_config(config)
    if verbose:
        cfg = cfg.model_copy(update={"overrides": {**cfg.overrides, "cluster.verbose": True}})
    _print_progress_to(console)
    outcome = run_sweep(cfg, resume=resume)
    if outcome.interrupted:
        console.print(f"[bold yellow]sweep interrupted[/]: finish it with  zv-ray sweep {config} --resume")
        raise typer.Exit(130)
    comp = compare_sweep(outcome.tracking_uri, outcome.parent_run_id)
    for t in tables(comp):
        console.print(t)
    console.print(f"[bold green]sweep finished[/] {outcome.num_trials} trials, Tune folder {outcome.experiment_path}")
    console.print(f"MLflow: {outcome.tracking_uri}  parent run {outcome.parent_run_id}")
    console.print("plots: " + "  ".join(str(p) for p in comp.files))


def compare(
    ref: str = typer.Argument(..., help="Parent run id or sweep name"),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///outputs/runs/mlflow.db"
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for the table and plots (default outputs/compare/<sweep>)"
    ),
) -> None:
    """Table of a sweep's trials (varied params, best metric, final loss, divergence), per arm the mean and the
    paired difference from the reference arm with 95% intervals, plus PNG plots."""
    import os

    from zv_ray.tune.compare import compare as compare_sweep
    from zv_ray.tune.compare import tables

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('outputs/runs/mlflow.db').resolve()}"
    comp = compare_sweep(uri, ref, out)
    console = _console()
    for t in tables(comp):
        console.print(t)
    console.print("written and logged to the parent run under compare/: " + "  ".join(str(p) for p in comp.files))
