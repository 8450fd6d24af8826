"""`zv-ray doctor --config C [--set k=v] [--cluster]`: is this node (or cluster) ready for this config?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def doctor(
    config: Optional[Path] = typer.Option(None, "--config", help="Run config YAML (defaults when omitted)"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value: section.key=value"),
    cluster: bool = typer.Option(False, "--cluster", help="Also run the checks on every node type of the connected cluster"),
    timeout: float = typer.Option(600, "--timeout", min=1, help="Seconds to wait for each node type to take its check"),
) -> None:
    """Check Python, torch/CUDA, gsplat, GL, VGG weights, MLflow and storage against a config; exit 1 on any failure."""
    from rich.console import Console

    from zv_ray.cluster.doctor import checks_table, run_doctor
    from zv_ray.config import load_config

    cfg = load_config(config, overrides or [])
    checks = run_doctor(cfg, cluster=cluster, timeout_s=timeout)
    console = Console()
    console.print(checks_table(checks))
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/]: " + ", ".join(f"{c.node} {c.name}" for c in failed))
        raise typer.Exit(1)
    console.print("[bold green]all checks passed[/]")
