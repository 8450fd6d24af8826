"""A suite's predictions as a small torch-free artifact (`predictions/<suite>.npz` on a training run): what
`zv-ray compare` lays side by side across a sweep's trials.

Rank 0 writes it at every evaluation, so a trial the scheduler stopped early still has its latest images.
The validation suite is fixed (data.val_zeroverse), so every trial of a sweep predicts the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zv_ray.eval.evaluate import ObjectResult
from zv_ray.inference.views import uint8_images
from zv_ray.io.atomic import atomic_path

# Enough to recognise shapes across trials, small at any resolution (4 x 4 x 512^2 x 3 x 2 bytes = 25 MB at most).
MAX_OBJECTS = 4
MAX_VIEWS = 4


@dataclass
class Predictions:
    step: int
    names: list[str]  # [N] object names
    pred: np.ndarray  # [N, V, H, W, 3] uint8
    target: np.ndarray  # [N, V, H, W, 3] uint8
    psnr: np.ndarray  # [N] float, each object's PSNR over all its test views


def pack_predictions(results: list[ObjectResult], step: int) -> Predictions:
    """The first MAX_OBJECTS objects, MAX_VIEWS test views each, evenly spread over the test rig."""
    results = results[:MAX_OBJECTS]
    views = np.unique(np.linspace(0, len(results[0].pred) - 1, MAX_VIEWS).round().astype(int))
    return Predictions(
        step=step, names=[r.name for r in results],
        pred=np.stack([uint8_images(r.pred[views]) for r in results]),
        target=np.stack([uint8_images(r.target[views]) for r in results]),
        psnr=np.array([r.psnr for r in results], dtype=np.float64),
    )


def save_predictions(path: Path, p: Predictions) -> Path:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            np.savez_compressed(f, step=p.step, names=np.array(p.names), pred=p.pred, target=p.target, psnr=p.psnr)
    return path


def load_predictions(path: Path) -> Predictions:
    with np.load(path) as f:
        return Predictions(step=int(f["step"]), names=[str(n) for n in f["names"]], pred=f["pred"], target=f["target"],
                           psnr=f["psnr"])
