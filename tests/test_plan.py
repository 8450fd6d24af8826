"""The data plan (zv_ray.data.plan) and the worker's feed: the samples of each global step depend on the config
alone, not on the worker count or on restarts; every unit's samples are consumed exactly once; sources mix by weight;
bad mixes and batches are refused in one line."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import tiny

from zv_ray.config import ConfigError, load_config
from zv_ray.config.base import flatten, set_keys
from zv_ray.data.plan import MIX_CHUNK, DataPlan, micro_batches, worker_slots
from zv_ray.data.records import SAMPLE_COLUMNS
from zv_ray.train.feed import MaterializedUnits, SampleFeed, StreamedUnits, StreamStalled

PLAN = DataPlan(seed=3, batch=8, k=4, window=12, weights=(1.0, 1.0, 1.5), counts=(50, 7, 1000))


def step_set(plan: DataPlan, step: int, workers: int) -> list[tuple[int, int]]:
    """(unit, sample) of every slot at `step`, gathered from `workers` workers in rank order."""
    out = []
    for rank in range(workers):
        units, js = plan.step_samples(step, worker_slots(plan.batch, workers, rank))
        out += list(zip(units.tolist(), js.tolist()))
    return out


def test_a_step_takes_the_same_samples_for_any_worker_count():
    for step in (0, 5, 11, 12, 100):
        one = step_set(PLAN, step, 1)
        assert step_set(PLAN, step, 2) == one and step_set(PLAN, step, 8) == one
        assert len(set(one)) == PLAN.batch  # eight different samples
    assert step_set(PLAN, 0, 1) != step_set(PLAN, 1, 1)
    reseeded = DataPlan(4, *(getattr(PLAN, f) for f in ("batch", "k", "window", "weights", "counts")))
    assert step_set(reseeded, 0, 1) != step_set(PLAN, 0, 1)


def test_whole_blocks_consume_every_sample_of_their_units_exactly_once():
    steps = 3 * PLAN.window
    consumed = Counter(s for step in range(steps) for s in step_set(PLAN, step, 1))
    units = PLAN.units_for(range(PLAN.batch), 0, steps)
    assert set(consumed.values()) == {1}
    assert set(consumed) == {(int(u), j) for u in units for j in range(PLAN.k)}
    # The shuffle spreads a unit's k samples over its block instead of k consecutive steps.
    steps_of_unit = [step for step in range(PLAN.window) for u, _ in step_set(PLAN, step, 1) if u == units[0]]
    assert len(steps_of_unit) == PLAN.k and steps_of_unit != list(range(steps_of_unit[0], steps_of_unit[0] + PLAN.k))


def test_a_restore_needs_only_its_blocks_units():
    assert PLAN.units_for(range(8), 12, 24).min() == PLAN.first_unit_of_block(12) == 3 * 8
    assert PLAN.units_for(range(8), 13, 24).min() == 3 * 8  # mid-block: the block's units again, not earlier ones
    assert len(PLAN.units_for(range(2, 4), 0, 12)) == 2 * PLAN.units_per_block


def test_objects_are_visited_in_passes_and_sources_mix_by_weight():
    units = np.arange(64 * MIX_CHUNK)
    source, index, visit = PLAN.locate(units)
    for s, count in enumerate(PLAN.counts):
        mine = units[source == s]
        n = np.arange(len(mine))
        np.testing.assert_array_equal(index[source == s], n % count)  # every object once per pass, in order
        np.testing.assert_array_equal(visit[source == s], n // count)
    # Each chunk holds every source within one unit of its weight's share, so the realized share is exact to 1/chunk.
    per_chunk = np.stack([np.bincount(source[c * MIX_CHUNK:(c + 1) * MIX_CHUNK], minlength=3) for c in range(64)])
    expected = MIX_CHUNK * np.array(PLAN.weights) / sum(PLAN.weights)
    assert np.abs(per_chunk - expected).max() < 1
    assert per_chunk.std(axis=0).max() > 0  # rounding differs by chunk (each unit's chance is exact, not rounded)
    np.testing.assert_allclose(PLAN.shares(30 * PLAN.window), np.array(PLAN.weights) / 3.5, atol=1 / MIX_CHUNK)
    # locate is pure: asking for a subset, or later, gives the same answer.
    sub = units[1000:1100]
    for got, want in zip(PLAN.locate(sub), (source[1000:1100], index[1000:1100], visit[1000:1100])):
        np.testing.assert_array_equal(got, want)


def test_a_zero_weight_source_is_never_drawn():
    plan = DataPlan(0, 4, 2, 4, (1.0, 0.0), (10, 10))
    assert set(plan.locate(np.arange(1000))[0].tolist()) == {0}


def test_micro_batches_are_the_fewest_equal_parts_that_fit():
    assert micro_batches(8, 8) == [range(0, 8)]
    assert micro_batches(8, 3) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert micro_batches(12, 8) == [range(0, 6), range(6, 12)]
    assert micro_batches(7, 2) == [range(i, i + 1) for i in range(7)]


def fake_unit(plan: DataPlan, unit: int, source: int, index: int, visit: int) -> dict[str, np.ndarray]:
    """A unit's k samples whose pixels encode (unit, sample): what an actor would send, without rendering."""
    k = plan.k
    return {"unit": np.full(k, unit), "source": np.full(k, source), "index": np.full(k, index),
            "view_pass": np.full(k, visit), "sample": np.arange(k), "object_id": np.full(k, 1000 * source + index),
            "rgb": (np.arange(k)[:, None, None, None, None] + unit * k).astype(np.int64) * np.ones((k, 2, 1, 1, 3)),
            "intrinsics": np.zeros((k, 2, 4), np.float32), "c2w": np.zeros((k, 2, 4, 4), np.float32)}


def streamed_feed(plan: DataPlan, slots: range, first: int, end: int, max_micro: int) -> SampleFeed:
    units = plan.units_for(slots, first, end)
    located = zip(units.tolist(), *(a.tolist() for a in plan.locate(units)))
    return SampleFeed(plan, slots, max_micro, StreamedUnits(iter(fake_unit(plan, *u) for u in located)))


def fed(feed: SampleFeed, steps: range) -> list[list[int]]:
    """Per step, the samples the feed handed out (as the pixel code), micro-batches joined."""
    return [np.concatenate([m["rgb"][:, 0, 0, 0, 0].numpy() for m in feed.take(s).micro]).tolist() for s in steps]


def test_the_feed_continues_exactly_after_a_restore_and_splits_over_workers_alike():
    end = 40
    whole = fed(streamed_feed(PLAN, range(8), 0, end, 8), range(end))
    restored = fed(streamed_feed(PLAN, range(8), 17, end, 8), range(17, end))
    assert restored == whole[17:]
    halves = [fed(streamed_feed(PLAN, worker_slots(8, 2, r), 0, end, 2), range(end)) for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == whole
    want = [[u * PLAN.k + j for u, j in step_set(PLAN, s, 1)] for s in range(end)]
    assert whole == want
    take = streamed_feed(PLAN, range(8), 0, end, 3).take(0)
    assert [len(m["rgb"]) for m in take.micro] == [2, 2, 2, 2] and set(take.micro[0]) == set(SAMPLE_COLUMNS)
    # The audit's record: source, object id and the sample's index within the object's visits.
    units, js = PLAN.step_samples(0, range(8))
    source, index, visit = PLAN.locate(units)
    assert take.consumed == [[s, 1000 * s + i, v * PLAN.k + j] for s, i, v, j in zip(source, index, visit, js)]


def test_the_feed_says_when_its_stream_falls_short():
    with pytest.raises(RuntimeError, match="ended before unit"):
        fed(streamed_feed(PLAN, range(8), 0, 12, 8), range(13))


def test_a_materialized_feed_reuses_each_objects_samples():
    plan = DataPlan(0, 2, 2, 2, (1.0,), (3,))
    objects = [fake_unit(plan, -1, 0, i, 0) for i in range(3)]
    feed = SampleFeed(plan, range(2), 2, MaterializedUnits(iter(objects)))
    taken = [feed.take(s) for s in range(9)]
    seen = Counter(tuple(c[1:]) for t in taken for c in t.consumed)
    assert set(seen.values()) == {1}  # visits are still distinct in the audit
    assert {c[1] for t in taken for c in t.consumed} == {0, 1, 2}


def test_bad_mixes_and_batches_get_one_line():
    bad = {
        "data.sources=[{kind: zeroverse, weight: 0}]": "weights sum to 0",
        "data.sources=[{kind: parquet}]": "parquet source needs a path",
        "data.sources=[{kind: zeroverse, path: x}]": "takes no path",
        "data.sources=[{kind: zeroverse}, {kind: zeroverse}]": "zeroverse source twice",
        "data.sources=[{kind: parquet, path: a/x}, {kind: parquet, path: b/x}]": "repeat",
        "data.shuffle_window=12": "multiple of data.samples_per_object",
        "train.global_batch_size=3": r"does not split evenly over 2 workers.*global_batch_size=4",
        "cluster.num_workers=[3, 2]": "min <= max",
    }
    for override, says in bad.items():
        extra = ["cluster.num_workers=2"] if "global_batch" in override else []
        with pytest.raises(ConfigError, match=says):
            load_config(None, tiny("data.samples_per_object=8", *extra, override))
    with pytest.raises(ConfigError, match=r"split evenly over 3 workers.*global_batch_size=12"):
        load_config(None, tiny("train.global_batch_size=4", "cluster.num_workers=[2, 4]"))


def test_source_weights_are_dotted_keys_like_any_other():
    cfg = load_config(None, tiny("data.sources=[{kind: zeroverse}, {kind: parquet, path: /d/gso, weight: 1}]",
                                 "data.sources.1.weight=3"))
    assert [s.weight for s in cfg.data.sources] == [1.0, 3.0] and cfg.data.sources[1].label == "gso"
    flat = flatten(cfg)
    assert flat["data.sources.1.weight"] == 3.0 and flat["data.sources.0.kind"] == "zeroverse"
    with pytest.raises(ConfigError, match="not an index of a list of 2"):
        set_keys(cfg.model_dump(mode="json"), {"data.sources.2.weight": 1})


def test_a_stream_that_stops_ends_in_one_clear_error_not_a_hang():
    import queue

    never = iter(queue.Queue().get, None)  # blocks forever, like a stream whose actors have no node to run on
    with pytest.raises(StreamStalled, match="no training units for 0.5 s"):
        StreamedUnits(never, stall_timeout_s=0.5).get(0, 0, 0)

    def broken():
        yield fake_unit(PLAN, 0, 0, 0, 0)
        raise ValueError("shard gone")

    units = StreamedUnits(broken(), stall_timeout_s=5)
    assert units.get(0, 0, 0)["unit"][0] == 0
    with pytest.raises(ValueError, match="shard gone"):  # the stream's own error, raised in the training thread
        units.get(8, 0, 0)


def test_the_feed_holds_at_most_its_shuffle_blocks_units_over_a_long_run():
    """Memory over time: 600 steps (600 units through the feed): the feed keeps the units of the current block (and
    those of the next it had to read to reach one), never the run's."""
    plan, slots, end = DataPlan(0, 8, 4, 12, (1.0, 1.0), (50, 7)), range(2, 6), 600
    feed = streamed_feed(plan, slots, 0, end, 4)
    held = []
    for step in range(end):
        feed.take(step)
        held.append(len(feed.units.units))
    assert len(plan.units_for(slots, 0, end)) == 600
    assert max(held) <= 2 * len(slots) * plan.units_per_block, max(held)
