"""The console's one progress display for a training run, fed by what rank 0 logs to MLflow.

Rank 0 already logs every `log_every` steps; the driver polls that run, so the display works the same on one
machine and under `ray job submit` (where the workers' own output stays in Ray's log folder). On a terminal it
is a live bar; elsewhere (job logs, CI) a plain line per twentieth of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# What the line shows, in order: (metric key, label, format).
FIELDS = (("train/loss", "loss", "{:.4f}"), ("train/psnr", "psnr", "{:.2f}"), ("val/psnr", "val", "{:.2f}"),
          ("val/psnr_over_white", "vs white", "{:+.2f} dB"), ("gso/psnr", "gso", "{:.2f}"),
          ("perf/samples_per_s", "samples/s", "{:.2f}"), ("perf/data_wait_frac", "data-wait", "{:.0%}"))


def describe(metrics: dict[str, float]) -> str:
    return "  ".join(f"{label} {fmt.format(metrics[key])}" for key, label, fmt in FIELDS if key in metrics)


@dataclass
class TrainingProgress:
    """`with TrainingProgress(...): trainer.fit()` shows step, loss, PSNR, samples/s, data-wait and ETA."""

    tracking_uri: str
    run_id: str
    total_steps: int
    console: Console
    # While no new step arrives: what Ray cannot place right now (cluster.resources.pending_demand), shown as
    # "waiting for resources: ..." instead of a silent display.
    waiting: Callable[[], str | None] | None = None
    every_s: float = 2.0
    last: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _poll(self) -> tuple[int, dict[str, float]] | None:
        from mlflow.tracking import MlflowClient

        try:
            run = MlflowClient(self.tracking_uri).get_run(self.run_id)
        except Exception:  # noqa: BLE001 - a missed poll only delays the display
            return None
        metrics = run.data.metrics
        return (int(metrics["train/step"]), metrics) if "train/step" in metrics else None

    def _waiting(self) -> str | None:
        try:
            return self.waiting() if self.waiting else None
        except Exception:  # noqa: BLE001 - the display must never stop training
            return None

    def _watch(self, update, wait) -> None:
        shown = -1
        while not self._stop.wait(self.every_s):
            polled = self._poll()
            if polled and polled[0] != shown:
                shown, self.last = polled
                update(shown, self.last)
            elif (line := self._waiting()) is not None:
                wait(line)

    def __enter__(self) -> "TrainingProgress":
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[line]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            task = self._bar.add_task("train", total=self.total_steps, line="starting Ray and the data actors")
            self._bar.start()
            update = lambda step, m: self._bar.update(task, completed=step, line=describe(m))  # noqa: E731
            wait = lambda line: self._bar.update(task, line=f"waiting for resources: {line}")  # noqa: E731
        else:  # job logs, CI: a line per twentieth of the run
            self._bar, every, printed = None, max(1, self.total_steps // 20), [-1]

            def update(step: int, m: dict[str, float]) -> None:
                if step // every > printed[0] // every or step >= self.total_steps:
                    printed[0] = step
                    self.console.print(f"step {step}/{self.total_steps}  {describe(m)}", soft_wrap=True)

            said = [""]

            def wait(line: str) -> None:  # once per change: job logs should not fill with the same line
                if line != said[0]:
                    said[0] = line
                    self.console.print(f"waiting for resources: {line}", soft_wrap=True, highlight=False)
        self._thread = threading.Thread(target=self._watch, args=(update, wait), daemon=True)
        self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        polled = self._poll()
        if polled:
            self.last = polled[1]
        if self._bar is not None:
            self._bar.stop()
        self.seconds = time.perf_counter() - self._started
