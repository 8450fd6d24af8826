"""The driver's progress display, fed Ray Train reports directly (no Ray): the relay, the inbox, both displays."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

from rich.console import Console

from zv_ray.train.progress import ReportInbox, ReportRelay, TrainingProgress


def report(step: int, **extra: float) -> dict[str, float]:
    """What hooks._report sends: the loop's metrics, "step" and "diverged"."""
    return {"train/loss": 1.0 / step, "train/psnr": 10.0 + step, "perf/samples_per_s": 4.0, "step": step,
            "diverged": 0.0, **extra}


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


class FakeInbox:
    """Stands in for the inbox actor's handle: `put.remote(report)` lands in `got`."""

    def __init__(self) -> None:
        self.got: list[dict] = []
        self.put = SimpleNamespace(remote=self.got.append)


def test_relay_forwards_rank_zeros_report_and_pickles_without_the_display():
    inbox = FakeInbox()
    relay = ReportRelay(inbox)
    relay.after_report(run_context=None, metrics=[report(4, **{"val/psnr": 12.0}), report(4)], checkpoint=None)
    assert inbox.got == [report(4, **{"val/psnr": 12.0})]  # rank 0's, which alone carries the evaluation
    # Ray pickles the callback into its controller actor: it must hold nothing the console holds (a lock).
    assert vars(relay) == {"inbox": inbox}
    assert pickle.loads(pickle.dumps(relay)).inbox.got == inbox.got


def test_inbox_hands_over_each_report_once_in_order():
    inbox = ReportInbox()
    inbox.put(report(2))
    inbox.put(report(4))
    assert [r["step"] for r in inbox.take()] == [2, 4]
    assert inbox.take() == []


def test_plain_display_prints_a_line_per_twentieth_and_keeps_the_last_evaluation():
    console, out = plain_console()
    with TrainingProgress(40, console, every_s=3600) as progress:
        for step in range(2, 41, 2):
            progress.receive(report(step, **({"val/psnr": 12.5} if step == 20 else {})))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{s}/40" for s in range(2, 41, 2)]
    assert lines[0] == "step 2/40  loss 0.5000  psnr 12.00  samples/s 4.00"
    assert "val 12.50" not in lines[8] and "val 12.50" in lines[9] and "val 12.50" in lines[-1]
    assert progress.last["step"] == 40


def test_plain_display_skips_steps_within_a_twentieth():
    console, out = plain_console()
    with TrainingProgress(200, console, every_s=3600) as progress:
        for step in range(1, 201):
            progress.receive(report(step))
    steps = [int(line.split()[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert steps == [1, *range(10, 201, 10)]  # the first report, then one per twentieth


def test_terminal_bar_shows_the_latest_step_and_metrics():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    with TrainingProgress(10, console, every_s=3600) as progress:
        progress.receive(report(10))
    assert "10/10" in out.getvalue() and "loss 0.1000" in out.getvalue()


def test_a_fresh_report_holds_back_the_waiting_line():
    console, out = plain_console()
    with TrainingProgress(10, console, waiting=lambda: "need {CPU: 1} x 1; free {CPU: 0}", every_s=3600) as progress:
        progress.receive(report(1))
        progress._tick()  # a report arrived since the last look: no waiting line
        assert "waiting" not in out.getvalue()
        progress._tick()  # nothing new: say what Ray waits for
    assert out.getvalue().splitlines()[-1] == "waiting for resources: need {CPU: 1} x 1; free {CPU: 0}"
