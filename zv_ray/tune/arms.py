"""A sweep's arms scored object by object: each arm's mean over its seeds and objects with a 95% interval, and
its paired difference from the reference arm (same seed, same object), with the verdict `zv-ray compare` prints.

An arm is every trial with the same sampled values but the seed (`seeds: N` in the sweep file). The scores are
each run's final evaluation (scores/<suite>.json), not its best one: picking the best of several noisy
evaluations would favour the noisier arm.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from zv_ray.tune.intervals import Interval, crossed_interval


@dataclass(frozen=True)
class ArmRun:
    arm: str  # the arm's label: the values it sampled for the space keys, without the seed
    seed: int
    scores: dict[str, float]  # object name -> score at the run's final evaluation (finite values only)
    diverged: bool


@dataclass(frozen=True)
class ArmStats:
    arm: str
    reference: bool
    runs: int  # runs with scores
    diverged: int  # of those, runs that diverged (scored on their weights when they stopped)
    objects: int  # objects every run of the arm scored
    mean: Interval | None  # None: no run with scores
    diff: Interval | None  # this arm minus the reference, paired by seed and object; None without pairs

    def verdict(self, mode: str) -> str:
        """'reference', 'not distinguishable', 'better' / 'worse' (mode: the metric's direction), or why none."""
        if self.reference:
            return "reference"
        if self.diff is None:
            return "no runs paired with the reference"
        if self.diff.low is None:
            return "one pair: no interval"
        if self.diff.spans_zero:
            return "not distinguishable"
        return "better" if (self.diff.mean > 0) == (mode == "max") else "worse"


def _keyed(runs: list[ArmRun]) -> dict[tuple[int, int], dict[str, float]]:
    """(seed, repeat) -> scores: a seed run twice (num_samples > 1) is two rows, paired in order."""
    seen: Counter[int] = Counter()
    out = {}
    for run in sorted(runs, key=lambda r: r.seed):
        out[(run.seed, seen[run.seed])] = run.scores
        seen[run.seed] += 1
    return out


def _table(rows: list[dict[str, float]]) -> np.ndarray | None:
    """[runs, objects] over the objects every row scored (sorted by name); None when there is none."""
    objects = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
    return np.array([[r[o] for o in objects] for r in rows]) if objects else None


def arm_stats(runs: list[ArmRun], reference: str | None, mode: str) -> list[ArmStats]:
    """Every arm's statistics: the reference first, then the others by mean, best first (mode "max" or "min")."""
    by_arm: dict[str, list[ArmRun]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    ref_rows = _keyed([r for r in by_arm.get(reference, []) if r.scores])
    stats = []
    for arm, arm_runs in by_arm.items():
        scored = [r for r in arm_runs if r.scores]
        rows = _keyed(scored)
        table = _table(list(rows.values()))
        diff = None
        if arm != reference and (pairs := sorted(set(rows) & set(ref_rows))):
            # The arm's runs on top of the reference's of the same seeds, over the objects all of them scored.
            both = _table([rows[k] for k in pairs] + [ref_rows[k] for k in pairs])
            if both is not None:
                diff = crossed_interval(both[: len(pairs)] - both[len(pairs) :])
        stats.append(ArmStats(
            arm=arm, reference=arm == reference, runs=len(scored), diverged=sum(r.diverged for r in scored),
            objects=0 if table is None else table.shape[1], mean=None if table is None else crossed_interval(table),
            diff=diff,
        ))
    sign = -1.0 if mode == "max" else 1.0
    return sorted(stats, key=lambda s: (not s.reference, s.mean is None, sign * (s.mean.mean if s.mean else 0.0)))
