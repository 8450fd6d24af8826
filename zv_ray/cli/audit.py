"""`zv-ray audit RUN [--against RUN2]`: did a run train on every sample once, and on the same samples as another?

    zv-ray audit outputs/runs/tiny                                     # gaps, repeats, ranks missing steps
    zv-ray audit s3://B/runs/paper-256 --against s3://B/runs/paper-256-rerun

Reads <run>/consumed_ids/rank<r>.jsonl (`--set train.audit_consumed_ids=true`, zv_ray/train/audit.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from zv_ray.train.audit import CheckReport

SHOWN = 5  # items of a list a line names before it counts the rest


def _few(items: Sequence, show: Callable[[Any], str] = json.dumps) -> str:
    listed = ", ".join(show(list(i) if isinstance(i, tuple) else i) for i in items[:SHOWN])
    return listed + (f", ... (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def _steps(steps: Sequence[int]) -> str:
    from zv_ray.train.audit import spans

    return f"step{'s' if len(steps) > 1 else ''} {spans(steps)}" if steps else "none"


def _problems(report: CheckReport) -> list[str]:
    lines = [f"no rank recorded {_steps(report.gaps)}"] if report.gaps else []
    lines += [f"rank {rank} has no record of {_steps(steps)}" for rank, steps in report.missing.items()]
    lines += [f"sample {json.dumps(list(r.sample))} taken {len(r.steps)} times, at steps {_few(r.steps)}"
              for r in report.repeats[:SHOWN]]
    if len(report.repeats) > SHOWN:
        lines.append(f"... and {len(report.repeats) - SHOWN} more samples taken more than once")
    lines += [f"rank {rank} recorded {_steps(steps)} twice (a restore that did not truncate its log)"
              for rank, steps in report.rerecorded.items()]
    return lines


def audit(
    run: str = typer.Argument(..., help="A run folder, local or s3:// (cluster.storage_path/cluster.run_name)"),
    against: Optional[str] = typer.Option(None, "--against", help="Another run folder: compare the samples of each step"),
) -> None:
    """Check a run's consumed samples for gaps and repeats, or compare two runs step by step; exit 1 on any finding."""
    from rich.console import Console
    from rich.table import Table

    from zv_ray.train.audit import check, compare, load

    runs = [load(run)] + ([load(against)] if against else [])  # both are read before anything prints
    reports = [check(r) for r in runs]
    table = Table(*(["run"] if against else []), "ranks", "steps", "samples", "gaps", "repeats", "ranks missing steps")
    console = Console()
    for label, report in zip(["A", "B"] if against else ["run"], reports):
        console.print(f"{label}: {report.run}", markup=False, highlight=False)
        steps = f"{report.steps[0]}-{report.steps[-1]} ({len(report.steps)})" if report.steps else "none"
        table.add_row(*([label] if against else []), _few(report.ranks, str), steps, str(report.samples),
                      str(len(report.gaps)), str(len(report.repeats)), str(len(report.missing)))
    console.print(table)
    failed = not all(r.ok for r in reports)
    for label, report in zip("AB", reports):
        for line in _problems(report):
            console.print(f"{label + ': ' if against else ''}{line}", markup=False, highlight=False)
    if against:
        comp = compare(*runs)
        failed = failed or not comp.ok
        console.print(f"compared {comp.compared} steps: {len(comp.mismatches)} took other samples in B than in A")
        if comp.only_a or comp.only_b:
            console.print(f"only in A: {_steps(comp.only_a)}; only in B: {_steps(comp.only_b)}")
        if comp.mismatches:
            first = comp.mismatches[0]
            console.print(f"first at step {first.step}: only in A {_few(first.only_a) or 'none'}; "
                          f"only in B {_few(first.only_b) or 'none'}", markup=False, highlight=False)
    if failed:
        console.print("[bold red]audit failed[/]")
        raise typer.Exit(1)
    console.print("[bold green]audit passed[/]: every step recorded by every rank, no sample taken twice"
                  + (", the same samples at every step in both runs" if against else ""))
