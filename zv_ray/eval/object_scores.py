"""A suite's per-object scores as a small JSON artifact (`scores/<suite>.json` on a training run): what
`zv-ray compare` pairs object by object across a sweep's arms and seeds.

Rank 0 writes it at every evaluation (overwriting it), so a finished trial holds its final evaluation's scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zv_ray.io.atomic import atomic_path

ARTIFACT_DIR = "scores"


@dataclass
class ObjectScores:
    suite: str  # "val" (held-out Zeroverse) or "gso" (train.eval_objects)
    step: int  # the evaluation's training step
    objects: dict[str, dict[str, float | None]]  # object name -> every SCORE_KEYS entry (None: LPIPS unavailable)


def save_object_scores(path: Path, scores: ObjectScores) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"suite": scores.suite, "step": scores.step, "objects": scores.objects}, indent=1))
    return path


def load_object_scores(path: Path) -> ObjectScores:
    data = json.loads(Path(path).read_text())
    return ObjectScores(suite=data["suite"], step=int(data["step"]), objects=data["objects"])
