"""Which samples every rank trained on at every global step, and the checks over that record.

    zv-ray train configs/tiny.yaml --set train.audit_consumed_ids=true   # <run>/consumed_ids/rank<r>.jsonl
    zv-ray audit outputs/runs/tiny                                       # gaps, repeats, ranks missing steps
    zv-ray audit outputs/runs/tiny --against outputs/runs/tiny-again     # the same samples at every step?

One JSON line per global step and rank: {"step": s, "samples": [[source, object_id, sample_index], ...], "world": W}
(the reader also takes [object_id, sample_index] samples, and lines without "world"). A worker restored from the
checkpoint of step s reopens its log with ConsumedLog.open(run_dir, rank, s), which drops the records of steps >= s
before it trains them again: after any number of restores a complete run holds each step once per rank, so a gap, a
repeat or a rank without a step is a fault of the run, not of its restores.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from zv_ray.io import storage
from zv_ray.io.atomic import atomic_path

CONSUMED_DIR = "consumed_ids"

Sample = tuple[str | int, ...]  # (object_id, sample_index) or (source, object_id, sample_index)


class AuditError(ValueError):
    """A folder that is not an audited run, or a record that cannot be read; the message names it and the fix."""


def log_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / CONSUMED_DIR / f"rank{rank}.jsonl"


class ConsumedLog:
    """One rank's record: append(step, samples) writes one line per global step and flushes it, so a killed worker
    loses at most the step it was on."""

    def __init__(self, path: Path, file: IO[str], world: int | None = None):
        self.path, self._file, self.world = path, file, world

    @classmethod
    def open(cls, run_dir: str | Path, rank: int, restored_step: int, world: int | None = None) -> "ConsumedLog":
        """The rank's log with every record of a step >= `restored_step` dropped (0: a fresh run keeps none). With
        the worker count `world`, rank 0 also truncates the logs of ranks >= world: after an elastic shrink no worker
        reopens them, and their steps past the checkpoint are trained again by the remaining ranks."""
        _truncate(log_path(run_dir, rank), restored_step)
        if rank == 0 and world is not None:
            for path in (Path(run_dir) / CONSUMED_DIR).glob("rank*.jsonl"):
                if path.stem.removeprefix("rank").isdigit() and int(path.stem.removeprefix("rank")) >= world:
                    _truncate(path, restored_step)
        path = log_path(run_dir, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, path.open("a"), world)

    def append(self, step: int, samples: Iterable[Sequence[str | int]]) -> None:
        record = {"step": step, "samples": [list(s) for s in samples]}
        if self.world is not None:  # the ranks that trained this step: an elastic run's count changes
            record["world"] = self.world
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _truncate(path: Path, restored_step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines(keepends=True)
                if line.endswith("\n") and json.loads(line)["step"] < restored_step]  # a torn last line goes too
        with atomic_path(path) as tmp:  # a kill during the rewrite leaves the old log, never half of it
            tmp.write_text("".join(kept))


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecords:
    run: str
    steps: dict[int, dict[int, list[Sample]]]  # step -> rank -> the samples that rank took at that step
    ranks: tuple[int, ...]
    rerecorded: tuple[tuple[int, int], ...]  # (rank, step) recorded twice by one rank: a restore that did not truncate
    worlds: dict[int, int] = field(default_factory=dict)  # step -> ranks that trained it, where recorded


def _parse(text: str, where: str) -> list[tuple[int, list[Sample], int | None]]:
    """(step, samples, world) per complete line; a last line without its newline is a write cut short, and is
    skipped."""
    records = []
    for no, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
            step, samples = record["step"], [tuple(s) for s in record["samples"]]
            if not isinstance(step, int) or any(len(s) not in (2, 3) for s in samples):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"{where}:{no} is not a consumed-samples record "
                             '({"step": s, "samples": [[source, object_id, sample_index], ...]})') from None
        records.append((step, samples, record.get("world")))
    return records


def load(run: str | Path) -> RunRecords:
    """Every rank's records of a run folder, local or remote (s3://, gs://)."""
    run = storage.absolute(run)
    if not storage.is_dir(run):
        raise AuditError(f"{run} is not a folder: pass a run folder (cluster.storage_path/cluster.run_name, "
                         "printed by zv-ray train as 'run folder:')")
    folder = storage.join(run, CONSUMED_DIR)
    files = [f for f in storage.list_files(folder, ".jsonl") if storage.name(f).startswith("rank")]
    if not files:
        is_run = storage.is_dir(folder) or any(storage.name(f).startswith("checkpoint_") for f in storage.list_folders(run))
        if not is_run:
            raise AuditError(f"{run} is not a run folder (no checkpoint_* and no {CONSUMED_DIR}/): pass the folder "
                             "zv-ray train printed as 'run folder:'")
        raise AuditError(f"{run} has no {CONSUMED_DIR}/rank<r>.jsonl: start the run with --set train.audit_consumed_ids=true")
    steps: dict[int, dict[int, list[Sample]]] = {}
    ranks, rerecorded, worlds = [], [], {}
    for file in files:
        rank_name = storage.name(file).removesuffix(".jsonl").removeprefix("rank")
        if not rank_name.isdigit():
            raise AuditError(f"{file}: expected rank<r>.jsonl, one file per rank")
        rank = int(rank_name)
        ranks.append(rank)
        for step, samples, world in _parse(storage.read_bytes(file).decode(), file):
            if world is not None:
                worlds[step] = world
            taken = steps.setdefault(step, {})
            if rank in taken:
                rerecorded.append((rank, step))
            taken.setdefault(rank, []).extend(samples)
    return RunRecords(run, dict(sorted(steps.items())), tuple(sorted(ranks)), tuple(sorted(rerecorded)), worlds)


# --- checks -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeat:
    sample: Sample
    steps: tuple[int, ...]  # every step that took it, once per time it was taken


@dataclass(frozen=True)
class CheckReport:
    run: str
    ranks: tuple[int, ...]
    steps: tuple[int, ...]  # the steps some rank recorded
    samples: int  # samples taken, all ranks and steps
    gaps: tuple[int, ...]  # steps between the first and the last that no rank recorded
    missing: dict[int, tuple[int, ...]]  # rank -> steps it was one of the ranks of and did not record
    repeats: tuple[Repeat, ...]  # samples taken more than once: at two steps, or twice in one step
    rerecorded: dict[int, tuple[int, ...]]  # rank -> steps it recorded twice

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.missing or self.repeats or self.rerecorded)


def check(records: RunRecords) -> CheckReport:
    steps = tuple(records.steps)
    recorded = set(steps)
    gaps = tuple(s for s in range(steps[0], steps[-1] + 1) if s not in recorded) if steps else ()
    # A rank owes a step when it was one of that step's ranks (an elastic run trains some steps on fewer).
    missing = {r: tuple(s for s in steps if r not in records.steps[s] and r < records.worlds.get(s, r + 1))
               for r in records.ranks}
    where: dict[Sample, list[int]] = {}
    for step, by_rank in records.steps.items():
        for samples in by_rank.values():
            for sample in samples:
                where.setdefault(sample, []).append(step)
    repeats = tuple(Repeat(s, tuple(at)) for s, at in where.items() if len(at) > 1)
    rerecorded: dict[int, tuple[int, ...]] = {}
    for rank, step in records.rerecorded:
        rerecorded[rank] = (*rerecorded.get(rank, ()), step)
    return CheckReport(
        run=records.run, ranks=records.ranks, steps=steps, samples=sum(len(at) for at in where.values()), gaps=gaps,
        missing={r: m for r, m in missing.items() if m}, repeats=repeats, rerecorded=rerecorded,
    )


@dataclass(frozen=True)
class Mismatch:
    step: int
    only_a: tuple[Sample, ...]  # taken in run a at this step and not in b (as many times as a took them more)
    only_b: tuple[Sample, ...]


@dataclass(frozen=True)
class Comparison:
    compared: int  # steps both runs recorded
    only_a: tuple[int, ...]  # steps only run a recorded
    only_b: tuple[int, ...]
    mismatches: tuple[Mismatch, ...]  # steps whose samples differ, whichever ranks took them

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.only_a or self.only_b)


def step_samples(records: RunRecords, step: int) -> Counter[Sample]:
    """The multiset of samples a step took across ranks: a run on another number of ranks, or one whose ranks split
    the batch another way, took the same samples when these are equal."""
    return Counter(s for samples in records.steps[step].values() for s in samples)


def _order(sample: Sample) -> list[tuple[bool, str | int]]:
    """Samples in id order; a source name sorts apart from the numbers, so mixed shapes never compare str with int."""
    return [(isinstance(v, str), v) for v in sample]


def compare(a: RunRecords, b: RunRecords) -> Comparison:
    both = [s for s in a.steps if s in b.steps]
    mismatches = []
    for step in both:
        in_a, in_b = step_samples(a, step), step_samples(b, step)
        if in_a != in_b:
            mismatches.append(Mismatch(step, tuple(sorted((in_a - in_b).elements(), key=_order)),
                                       tuple(sorted((in_b - in_a).elements(), key=_order))))
    return Comparison(
        compared=len(both), only_a=tuple(s for s in a.steps if s not in b.steps),
        only_b=tuple(s for s in b.steps if s not in a.steps), mismatches=tuple(mismatches),
    )


def spans(steps: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out: list[list[int]] = []
    for s in steps:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)
