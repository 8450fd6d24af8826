"""Shared test setup: headless GL, quiet Ray, and paths to the shared evaluation objects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
GSO_DIR = REPO.parent / "shared" / "eval" / "gso"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread avoids OpenMP spin-waits on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
