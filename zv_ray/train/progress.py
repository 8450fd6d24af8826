"""The console's one progress display for a training run, fed by Ray Train's own reports.

Every `ray.train.report` (each `log_every` steps and at checkpoints) reaches Ray Train's controller, an actor
beside the driver; ReportRelay, a callback there, forwards rank 0's metrics to a small inbox actor that the
display empties every few seconds. So the display works the same on one machine and under `ray job submit`
(where the workers' own output stays in Ray's log folder). On a terminal it is a live bar; elsewhere (job logs,
CI) a plain line per twentieth of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.train import UserCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# What the line shows, in order: (metric key, label, format).
FIELDS = (("train/loss", "loss", "{:.4f}"), ("train/psnr", "psnr", "{:.2f}"), ("val/psnr", "val", "{:.2f}"),
          ("val/psnr_over_white", "vs white", "{:+.2f} dB"), ("gso/psnr", "gso", "{:.2f}"),
          ("perf/samples_per_s", "samples/s", "{:.2f}"), ("perf/data_wait_frac", "data-wait", "{:.0%}"))


def describe(metrics: dict[str, float]) -> str:
    return "  ".join(f"{label} {fmt.format(metrics[key])}" for key, label, fmt in FIELDS if key in metrics)


class ReportInbox:
    """A Ray actor holding the reports the display has not collected yet."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def put(self, report: dict[str, Any]) -> None:
        self.reports.append(report)

    def take(self) -> list[dict[str, Any]]:
        taken, self.reports = self.reports, []
        return taken


class ReportRelay(UserCallback):
    """Runs in Ray Train's controller actor, where Ray pickles it: it holds the inbox's handle and nothing else
    (no console, no lock)."""

    def __init__(self, inbox) -> None:
        self.inbox = inbox

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        # metrics[i] is world rank i's report; only rank 0's carries the evaluations. Not awaited: the controller
        # runs an event loop, and the display must never hold up training.
        self.inbox.put.remote(metrics[0])


@dataclass
class TrainingProgress:
    """Shows step, loss, PSNR, samples/s, data-wait and ETA:

        with TrainingProgress(total, console) as progress:
            build_trainer(cfg, ..., callbacks=[progress.relay()]).fit()
    """

    total_steps: int
    console: Console
    # While no new step arrives: what Ray cannot place right now (cluster.resources.pending_demand), shown as
    # "waiting for resources: ..." instead of a silent display.
    waiting: Callable[[], str | None] | None = None
    every_s: float = 2.0
    last: dict[str, Any] = field(default_factory=dict)  # every metric's latest reported value
    _inbox: Any = None
    _fresh: bool = False  # a report arrived since the last tick
    _stop: threading.Event = field(default_factory=threading.Event)

    def relay(self) -> ReportRelay:
        """The callback that brings every report to this display (Ray must be up)."""
        self._inbox = ray.remote(num_cpus=0)(ReportInbox).remote()
        return ReportRelay(self._inbox)

    def receive(self, report: dict[str, Any]) -> None:
        """One report of rank 0: the loop's metrics and its "step". An evaluation's scores stay shown until the next."""
        self.last.update(report)
        self._fresh = True
        self._show(int(report["step"]), self.last)

    def _collect(self) -> list[dict[str, Any]]:
        if self._inbox is None:
            return []
        try:
            return ray.get(self._inbox.take.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a missed collection only costs the display some lines
            return []

    def _waiting(self) -> str | None:
        try:
            return self.waiting() if self.waiting else None
        except Exception:  # noqa: BLE001 - the display must never stop training
            return None

    def _tick(self) -> None:
        for report in self._collect():
            self.receive(report)
        if self._fresh:
            self._fresh = False
        elif (line := self._waiting()) is not None:
            self._wait(line)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self._tick()

    def __enter__(self) -> "TrainingProgress":
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[line]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            task = self._bar.add_task("train", total=self.total_steps, line="starting Ray and the data actors")
            self._bar.start()
            self._show = lambda step, m: self._bar.update(task, completed=step, line=describe(m))
            self._wait = lambda line: self._bar.update(task, line=f"waiting for resources: {line}")
        else:  # job logs, CI: a line per twentieth of the run
            self._bar, every, printed = None, max(1, self.total_steps // 20), [-1]

            def show(step: int, m: dict[str, float]) -> None:
                if step // every > printed[0] // every or step >= self.total_steps:
                    printed[0] = step
                    self.console.print(f"step {step}/{self.total_steps}  {describe(m)}", soft_wrap=True)

            said = [""]

            def wait(line: str) -> None:  # once per change: job logs should not fill with the same line
                if line != said[0]:
                    said[0] = line
                    self.console.print(f"waiting for resources: {line}", soft_wrap=True, highlight=False)

            self._show, self._wait = show, wait
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for report in self._collect():  # the reports sent after the watcher's last look
            self.receive(report)
        if self._bar is not None:
            self._bar.stop()
