"""The interval arithmetic of `zv-ray compare` against cases computed by hand, and the arms' paired verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zv_ray.tune.arms import ArmRun, arm_stats
from zv_ray.tune.intervals import crossed_interval, mean_squares, variance_of_mean

# t quantiles (0.975) from a printed table: df 1, 3.
T_1, T_3 = 12.706, 3.182


def test_one_seed_is_the_ordinary_t_interval_over_objects():
    # 1, 2, 3, 4: mean 2.5, sample variance 5/3, standard error sqrt(5/3 / 4) = 0.6455, t(3) = 3.182.
    iv = crossed_interval(np.array([[1.0, 2.0, 3.0, 4.0]]))
    half = T_3 * math.sqrt(5 / 3 / 4)
    assert (iv.mean, iv.seeds, iv.objects, iv.df) == (2.5, 1, 4, 3)
    assert (iv.low, iv.high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-3)
    # One object over four seeds: the same numbers.
    again = crossed_interval(np.array([[1.0], [2.0], [3.0], [4.0]]))
    assert (again.low, again.high, again.df) == pytest.approx((iv.low, iv.high, 3))


def test_seeds_crossed_with_objects_by_hand():
    # y = [[1, 2, 3], [2, 4, 6]]: grand mean 3, seed means 2, 4, object means 1.5, 3, 4.5.
    # MS_seed = 3 * (1 + 1) / 1 = 6; MS_object = 2 * (2.25 + 0 + 2.25) / 2 = 4.5;
    # residuals +-0.5, 0 -> MS_res = 1 / 2 = 0.5. Var(mean) = (6 + 4.5 - 0.5) / 6 = 5/3;
    # Satterthwaite df = 10^2 / (6^2 / 1 + 4.5^2 / 2 + 0.5^2 / 2) = 100 / 46.25.
    y = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    assert mean_squares(y) == {"seed": (6.0, 1), "object": (4.5, 2), "residual": (0.5, 2)}
    variance, df = variance_of_mean(y)
    assert variance == pytest.approx(5 / 3) and df == pytest.approx(100 / 46.25)
    from scipy.stats import t

    iv = crossed_interval(y)
    half = t.ppf(0.975, 100 / 46.25) * math.sqrt(5 / 3)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    # Wider than a t-interval over the 6 values as if independent (which would count each object twice).
    naive = t.ppf(0.975, 5) * y.std(ddof=1) / math.sqrt(6)
    assert half > naive


def test_a_component_below_the_residual_is_clamped_to_zero():
    # y = [[0, 1], [1, 0]]: seed and object means all 0.5 (MS 0), residuals +-0.5: MS_res = 1 with 1 df.
    # Var(mean) = MS_res / 4 = 0.25 (the unclamped 0 + 0 - 1 would be negative), df 1.
    iv = crossed_interval(np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert variance_of_mean(np.array([[0.0, 1.0], [1.0, 0.0]])) == (0.25, 1.0)
    assert (iv.low, iv.high) == pytest.approx((0.5 - T_1 * 0.5, 0.5 + T_1 * 0.5), abs=1e-3)


def test_no_spread_and_a_single_value():
    same = crossed_interval(np.full((2, 3), 4.0))
    assert (same.low, same.high) == (4.0, 4.0) and not same.spans_zero
    one = crossed_interval(np.array([[7.0]]))
    assert one.low is None and one.text() == "7.00" and one.spans_zero
    with pytest.raises(ValueError, match="seeds, objects"):
        crossed_interval(np.zeros((0, 3)))


def runs(arm: str, table: list[list[float]], diverged: bool = False) -> list[ArmRun]:
    """One run per row (seeds 0, 1, ...), objects o0, o1, ..."""
    return [ArmRun(arm, seed, {f"o{i}": v for i, v in enumerate(row)}, diverged) for seed, row in enumerate(table)]


def test_paired_differences_and_verdicts():
    ref = [[20.0, 25.0, 15.0], [21.0, 26.0, 16.0]]  # objects differ by 10 dB, seeds by 1 dB
    # +0.1 dB on two objects and -0.1 on one: the objects' own spread cancels in the pairs, the gap does not.
    close = [[20.1, 25.1, 14.9], [21.1, 26.1, 15.9]]
    ahead = [[22.0, 27.1, 16.9], [23.1, 28.0, 18.0]]  # +2 dB everywhere, give or take 0.1
    behind = [[19.0, 24.0, 14.0]]  # one seed, -1 dB on every object: an interval over objects (no spread)
    stats = {s.arm: s for s in arm_stats(runs("ref", ref) + runs("close", close) + runs("ahead", ahead)
                                         + runs("behind", behind, diverged=True), "ref", "max")}
    assert [s.arm for s in arm_stats(runs("ref", ref) + runs("ahead", ahead), "ref", "max")] == ["ref", "ahead"]
    assert stats["ref"].verdict("max") == "reference" and stats["ref"].diff is None
    assert stats["ref"].mean.mean == pytest.approx(np.mean(ref)) and stats["ref"].objects == 3

    d_close = np.array(close) - np.array(ref)  # [[0.1, 0.1, -0.1], [0.1, 0.1, -0.1]]
    assert stats["close"].diff.mean == pytest.approx(d_close.mean())
    assert stats["close"].diff.spans_zero and stats["close"].verdict("max") == "not distinguishable"
    # The arms' own means overlap whatever the pairing says: 10 dB of object spread against 0.03 dB of gap.
    assert stats["close"].mean.low < stats["ref"].mean.mean < stats["close"].mean.high

    assert stats["ahead"].diff.low > 0 and stats["ahead"].verdict("max") == "better"
    assert stats["ahead"].verdict("min") == "worse"  # lower-is-better metric (LPIPS)

    behind_stats = stats["behind"]
    assert (behind_stats.runs, behind_stats.diverged) == (1, 1)
    assert (behind_stats.diff.seeds, behind_stats.diff.objects) == (1, 3)  # paired on seed 0 only
    assert behind_stats.diff.mean == pytest.approx(-1.0) and behind_stats.verdict("max") == "worse"


def test_pairs_only_where_both_arms_have_the_seed_and_the_object():
    ref = runs("ref", [[10.0, 11.0], [12.0, 13.0]])
    # Seed 1 only, and one object missing (non-finite scores are left out before this point).
    other = [ArmRun("b", 1, {"o0": 12.5}, False), ArmRun("c", 5, {"o0": 1.0}, False)]
    stats = {s.arm: s for s in arm_stats(ref + other, "ref", "max")}
    assert stats["b"].diff.mean == pytest.approx(0.5) and stats["b"].verdict("max") == "one pair: no interval"
    assert stats["c"].diff is None and stats["c"].verdict("max") == "no runs paired with the reference"
    no_ref = arm_stats(ref, None, "max")
    assert [s.diff for s in no_ref] == [None]
