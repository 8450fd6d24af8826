"""The data order: which samples each global step trains on, a pure function of the config and the sources' sizes.

A *unit* is one visit of one object: its k = data.samples_per_object training samples (view subsets), rendered or
read together so generating the object is paid once for k samples. Units are numbered g = 0, 1, 2, ...

    source of g     each chunk of MIX_CHUNK units holds source i in proportion w_i / sum(w) (systematic rounding
                    with a seeded offset: every unit's chance is exactly w_i / sum(w), and the realized share stays
                    within a unit per chunk of it), in a seeded order within the chunk
    object of g     the n-th unit of source i visits object n % count_i in view pass n // count_i
    slots           the global batch has B = train.global_batch_size slots; slot b takes units g = j * B + b
    shuffle         each slot's samples are permuted within blocks of data.shuffle_window samples, so an object's
                    k samples spread over that many steps
    step s          every slot's s-th sample: the same for 1 or 64 workers, and after any restart

Worker r of W takes slots [r B / W, (r + 1) B / W), in micro-batches (micro_batches). A restore at step s needs only
the units of the shuffle blocks from s on: nothing consumed before s is trained on again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from zv_ray.config import RunConfig

# Units per mixing chunk: the realized share of a source is within ~1 unit per chunk of its weight.
MIX_CHUNK = 32
# Stream tags of the plan's random draws (beside the seed and the chunk, slot or block).
_MIX, _ORDER = 1, 2
# (seed, weights) -> cumulative units per source before each chunk, as far as asked.
_BEFORE: dict[tuple, np.ndarray] = {}


@dataclass(frozen=True)
class DataPlan:
    seed: int
    batch: int  # B: slots of the global batch
    k: int  # samples per unit
    window: int  # samples per shuffle block of a slot (a multiple of k)
    weights: tuple[float, ...]  # per source
    counts: tuple[int, ...]  # objects per source

    @classmethod
    def from_config(cls, cfg: RunConfig, counts: list[int]) -> "DataPlan":
        """counts: objects per data.sources entry (pipeline.source_sets)."""
        d = cfg.data
        return cls(cfg.seed, cfg.train.global_batch_size, d.samples_per_object, d.shuffle_window,
                   tuple(float(s.weight) for s in d.sources), tuple(int(c) for c in counts))

    @property
    def units_per_block(self) -> int:
        return self.window // self.k

    def fingerprint(self) -> dict:
        """What a checkpoint's data position means; a restore under another plan would train on other samples."""
        return {"seed": self.seed, "batch": self.batch, "k": self.k, "window": self.window,
                "weights": list(self.weights), "counts": list(self.counts)}

    # -- units -> (source, object, view pass) --------------------------------------------------------------------

    def locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # each [N] int64
        """Units g [N] -> (source index, object index within its source, visit: the view pass its samples take, unless
        data.materialize fixes every object's samples at pass 0)."""
        g = np.asarray(g, dtype=np.int64)
        chunk, pos = np.divmod(g, MIX_CHUNK)
        before = self._units_before_chunks(int(chunk.max(initial=0)) + 1)  # [chunks + 1, S]
        source, rank = np.empty_like(g), np.empty_like(g)
        for c in np.unique(chunk):
            at = chunk == c
            src, rnk = _chunk_order(self.seed, int(c), tuple(before[c + 1] - before[c]))
            source[at], rank[at] = src[pos[at]], rnk[pos[at]]
        n = before[chunk, source] + rank  # units of that source before this one
        counts = np.asarray(self.counts, dtype=np.int64)[source]
        return source, n % counts, n // counts

    def source_units_before(self, g: int) -> np.ndarray:  # [S]
        """Units of each source among units 0 .. g - 1."""
        chunk, pos = divmod(int(g), MIX_CHUNK)
        before = self._units_before_chunks(chunk + 1)
        src, _ = _chunk_order(self.seed, chunk, tuple(before[chunk + 1] - before[chunk]))
        return before[chunk] + np.bincount(src[:pos], minlength=len(self.weights))

    def _units_before_chunks(self, chunks: int) -> np.ndarray:  # [>= chunks + 1, S]
        """Row c: units of each source in chunks 0 .. c - 1 (grown by doubling, once per process)."""
        key = (self.seed, self.weights)
        table = _BEFORE.get(key)
        if table is None or len(table) <= chunks:
            n = max(chunks, 2 * (len(table) if table is not None else 512))
            per = _chunk_counts(self.seed, self.weights, n)
            table = _BEFORE[key] = np.concatenate([np.zeros((1, len(self.weights)), np.int64), np.cumsum(per, axis=0)])
        return table

    # -- steps -> units and samples ------------------------------------------------------------------------------

    def step_samples(self, step: int, slots: range) -> tuple[np.ndarray, np.ndarray]:  # each [len(slots)]
        """(unit g, sample j within the unit) that each slot trains on at global step `step`."""
        block, at = divmod(step, self.window)
        picked = np.array([_block_order(self.seed, self.window, b, block)[at] for b in slots], dtype=np.int64)
        unit_in_block, j = np.divmod(picked, self.k)
        return (block * self.units_per_block + unit_in_block) * self.batch + np.asarray(slots, dtype=np.int64), j

    def units_for(self, slots: range, first_step: int, end_step: int) -> np.ndarray:  # [N] sorted
        """Every unit whose samples `slots` train on at steps first_step .. end_step - 1: the shuffle blocks those steps
        touch, whole (a restore mid-block renders its block's units again, but trains only on what it had not)."""
        if end_step <= first_step:
            return np.zeros(0, np.int64)
        u = self.units_per_block
        j = np.arange(first_step // self.window * u, ((end_step - 1) // self.window + 1) * u, dtype=np.int64)
        return (j[:, None] * self.batch + np.asarray(slots, dtype=np.int64)[None, :]).ravel()

    def first_unit_of_block(self, step: int) -> int:
        """The lowest unit the shuffle block of `step` (and every later one) uses: units below it are done."""
        return step // self.window * self.units_per_block * self.batch

    def shares(self, end_step: int) -> np.ndarray:  # [S]
        """Fraction of the samples of steps 0 .. end_step - 1 (every slot) that came from each source: whole blocks
        hold whole units, the last, partial block is counted sample by sample."""
        done_block = end_step // self.window * self.window
        counts = self.source_units_before(self.first_unit_of_block(done_block)).astype(np.float64) * self.k
        for step in range(done_block, end_step):
            units, _ = self.step_samples(step, range(self.batch))
            counts += np.bincount(self.locate(units)[0], minlength=len(self.weights))
        return counts / max(counts.sum(), 1)


def worker_slots(batch: int, world: int, rank: int) -> range:
    """The slots of the global batch worker `rank` of `world` takes (the batch splits evenly: RunConfig checks)."""
    per = batch // world
    return range(rank * per, (rank + 1) * per)


def micro_batches(samples: int, max_micro: int) -> list[range]:
    """A worker's `samples` in the fewest equal micro-batches of at most `max_micro` (positions into its slots)."""
    count = next(a for a in range(-(-samples // max_micro), samples + 1) if samples % a == 0)
    size = samples // count
    return [range(i * size, (i + 1) * size) for i in range(count)]


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def _chunk_counts(seed: int, weights: tuple[float, ...], chunks: int) -> np.ndarray:  # [chunks, S]
    """Units of each source in chunks 0 .. chunks - 1: systematic rounding of MIX_CHUNK x w / sum(w) with a seeded
    offset per chunk (one stream of offsets, so chunk c's is the same however many are drawn)."""
    offsets = _rng(seed, _MIX).random(chunks)
    edges = np.floor(np.cumsum(weights) / np.sum(weights) * MIX_CHUNK + offsets[:, None]).astype(np.int64)
    edges[:, -1] = MIX_CHUNK  # cumsum may land a hair under 1
    return np.diff(edges, axis=1, prepend=0)


@lru_cache(maxsize=4096)
def _chunk_order(seed: int, chunk: int, counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:  # [C], [C]
    """The source of each unit of `chunk` (its `counts` per source, in a seeded order) and each unit's rank among
    its source's units in the chunk."""
    source = _rng(seed, _MIX, chunk).permutation(np.repeat(np.arange(len(counts)), counts))
    rank = np.empty(MIX_CHUNK, np.int64)
    for s in range(len(counts)):
        at = source == s
        rank[at] = np.arange(int(at.sum()))
    return source, rank


@lru_cache(maxsize=65536)
def _block_order(seed: int, window: int, slot: int, block: int) -> np.ndarray:  # [window]
    """The order of slot `slot`'s samples in shuffle block `block` (sample positions u * k + j of the block's units)."""
    return _rng(seed, _ORDER, slot, block).permutation(window)
