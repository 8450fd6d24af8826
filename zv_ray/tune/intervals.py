"""95% confidence intervals for a score measured over seeds x objects (pure numpy + scipy's t quantile).

An arm of a sweep is trained with S seeds and every run is scored on the same O objects: a table y[s, o]. Both
are samples: seeds of training randomness (initial weights, objects and views drawn), objects of the objects
one cares about. The two are crossed (every seed scores every object), so the mean's variance has a seed part,
an object part and a residual:

    Var(mean) = var_seed / S + var_object / O + var_residual / (S O)

A t-interval over the S x O values as if independent counts each object S times and each seed O times and is
too narrow (an object that is hard for one seed is hard for all); one over the S seed means ignores which
objects were drawn. `crossed_interval` estimates the three parts from the two-way ANOVA mean squares (random
effects, each part clamped at 0), with Satterthwaite's degrees of freedom for the t quantile. With one seed it
is the ordinary t-interval over objects, with one object the one over seeds.

For two arms, apply it to the paired differences d[s, o] = y_a[s, o] - y_ref[s, o] (same seed, same object):
what the objects and seeds do to both arms alike cancels. An interval that contains 0 means the two arms are
not distinguishable at this number of seeds and objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None: a single value, no interval
    high: float | None
    seeds: int
    objects: int
    df: float | None  # Satterthwaite degrees of freedom of the t quantile (None: no interval, or zero spread)

    @property
    def spans_zero(self) -> bool:
        """True when 0 lies in the interval (or there is none): no difference can be claimed."""
        return self.low is None or self.low <= 0.0 <= self.high

    def text(self, fmt: str = ".2f") -> str:
        """'19.72 [19.10, 20.34]', or the mean alone when there is no interval."""
        if self.low is None:
            return format(self.mean, fmt)
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def mean_squares(values: np.ndarray) -> dict[str, tuple[float, int]]:
    """Two-way ANOVA without replication on y[s, o]: {"seed" | "object" | "residual": (mean square, df)}; a
    factor with one level has no entry, and neither has the residual then."""
    y = np.asarray(values, dtype=np.float64)
    s, o = y.shape
    grand = y.mean()
    seed_means, object_means = y.mean(axis=1), y.mean(axis=0)
    out = {}
    if s > 1:
        out["seed"] = (o * float(((seed_means - grand) ** 2).sum()) / (s - 1), s - 1)
    if o > 1:
        out["object"] = (s * float(((object_means - grand) ** 2).sum()) / (o - 1), o - 1)
    if s > 1 and o > 1:
        residual = y - seed_means[:, None] - object_means[None, :] + grand
        out["residual"] = (float((residual**2).sum()) / ((s - 1) * (o - 1)), (s - 1) * (o - 1))
    return out


def variance_of_mean(values: np.ndarray) -> tuple[float, float | None]:
    """(estimated variance of the mean of y[s, o], Satterthwaite df), variance components clamped at 0:
    S O Var = MS_res + max(0, MS_seed - MS_res) + max(0, MS_object - MS_res), each MS with its own df."""
    y = np.asarray(values, dtype=np.float64)
    ms = mean_squares(y)
    if not ms:
        return 0.0, None
    if "residual" not in ms:  # one seed or one object: that factor's mean square alone
        coef = {name: 1.0 for name in ms}
    else:
        coef = {"residual": 1.0}
        for factor in ("seed", "object"):
            if ms[factor][0] > ms["residual"][0]:
                coef[factor] = 1.0
                coef["residual"] -= 1.0
    total = sum(c * ms[name][0] for name, c in coef.items())
    # Satterthwaite: df = (sum c_i MS_i)^2 / sum (c_i MS_i)^2 / df_i.
    denominator = sum((c * ms[name][0]) ** 2 / ms[name][1] for name, c in coef.items())
    return total / y.size, (total**2 / denominator if denominator > 0 else None)


def crossed_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The mean of y[s, o] (seeds x objects) with its `level` confidence interval (module docstring)."""
    from scipy.stats import t

    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 2 or y.size == 0:
        raise ValueError(f"need a non-empty [seeds, objects] table, got shape {y.shape}")
    mean, (s, o) = float(y.mean()), y.shape
    if y.size == 1:
        return Interval(mean, None, None, s, o, None)
    variance, df = variance_of_mean(y)
    if df is None:  # every value equal: no spread to scale
        return Interval(mean, mean, mean, s, o, None)
    half = float(t.ppf(0.5 + level / 2, df)) * math.sqrt(variance)
    return Interval(mean, mean - half, mean + half, s, o, df)
