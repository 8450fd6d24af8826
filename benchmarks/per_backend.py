"""Run a benchmark's measurement once per GL backend, each in a fresh single-threaded child process (a process
picks its GL platform once), and report what each child printed as its last line of JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable


def run_per_backend(script: str, backends: list[str], child_args: list[str], config: str | None,
                    overrides: list[str], report: Callable[[dict], None]) -> None:
    print(f"cpu cores visible: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  config: {config or 'defaults'}")
    for backend in backends:
        cmd = [sys.executable, script, "--child", backend, *child_args]
        cmd += ["--config", config] if config else []
        cmd += [x for o in overrides for x in ("--set", o)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            print(f"\n== {backend}: failed\n{proc.stderr[-2000:]}")
            continue
        report(json.loads(proc.stdout.strip().splitlines()[-1]))
