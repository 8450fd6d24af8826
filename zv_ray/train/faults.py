"""Chaos hook for failure drills: make a train worker raise, or die by SIGKILL, once at a given step.

    ZV_RAY_FAULT_AT_STEP=12 ZV_RAY_FAULT_MARKER=/tmp/fault-once zv-ray train configs/tiny.yaml
    ZV_RAY_FAULT_KIND=sigkill ...      # the worker process is killed outright, as an OOM kill or a lost node would

The marker file makes the fault fire once per drill, so the restarted run gets past that step.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAULT_ENV = ("ZV_RAY_FAULT_AT_STEP", "ZV_RAY_FAULT_MARKER", "ZV_RAY_FAULT_KIND")


class InjectedFault(RuntimeError):
    pass


def maybe_inject_fault(step: int, rank: int) -> None:
    at = os.environ.get("ZV_RAY_FAULT_AT_STEP")
    marker = os.environ.get("ZV_RAY_FAULT_MARKER")
    if at is None or marker is None or rank != 0 or step != int(at) or Path(marker).exists():
        return
    Path(marker).write_text(f"fault injected at step {step}\n")
    if os.environ.get("ZV_RAY_FAULT_KIND") == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"injected fault at step {step} (ZV_RAY_FAULT_AT_STEP)")
