"""Opt-in checks for failure drills, built once so an ordinary run pays nothing per step.

    ZV_RAY_FAULT_AT_STEP=12 ZV_RAY_FAULT_MARKER=/tmp/fault-once zv-ray train configs/tiny.yaml
    ZV_RAY_FAULT_KIND=sigkill ...      # the worker process is killed outright, as an OOM kill or a lost node would

The marker file makes the fault fire once per drill, so the restarted run gets past that step. Before striking, the
drill waits three of Ray Train's health-check intervals: the controller takes a worker's last report (and so registers
its checkpoint) only when it polls, so a worker killed right after reporting would restart from the checkpoint before,
and a drill's "restored from step N" would depend on timing.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


class InjectedFault(RuntimeError):
    pass


@dataclass(frozen=True)
class FaultDrill:
    """Rank 0 raises (or SIGKILLs itself) once, at `at_step`, unless `marker` says it already did."""

    at_step: int
    marker: Path
    sigkill: bool

    @classmethod
    def from_env(cls, rank: int) -> "FaultDrill | None":
        at, marker = os.environ.get("ZV_RAY_FAULT_AT_STEP"), os.environ.get("ZV_RAY_FAULT_MARKER")
        if at is None or marker is None or rank != 0:
            return None
        return cls(int(at), Path(marker), os.environ.get("ZV_RAY_FAULT_KIND") == "sigkill")

    def before_step(self, step: int) -> None:
        if step != self.at_step or self.marker.exists():
            return
        self.marker.write_text(f"fault injected at step {step}\n")
        time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0")))
        if self.sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault at step {step} (ZV_RAY_FAULT_AT_STEP)")
