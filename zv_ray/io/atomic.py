"""Atomic file writes: readers never see a half-written file under its final name."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success it is renamed over `final`, on error removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, final)  # atomic on POSIX
    finally:
        tmp.unlink(missing_ok=True)
