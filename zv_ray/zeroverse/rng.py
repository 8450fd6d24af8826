"""Per-object, per-stage random streams.

Each stage draws from its own stream keyed by (seed, object id, stage name), so an object is a pure
function of (seed, id, config), and adding or switching off a stage never shifts another stage's draws.
"""

from __future__ import annotations

import zlib

import numpy as np


def stage_rng(seed: int, object_id: int, stage: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, object_id, zlib.crc32(stage.encode())])))
