"""The consumed-samples audit on logs ConsumedLog itself writes: a restore truncates the steps it trains again, and
`check` / `compare` / `zv-ray audit` find gaps, repeats, ranks missing steps and runs that took other samples,
whichever ranks took them."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import BIN, REPO

from zv_ray.io import storage
from zv_ray.train.audit import AuditError, ConsumedLog, check, compare, load, log_path, spans


def write_run(run: Path, steps: dict[int, dict[int, list[list]]]) -> Path:
    """{step: {rank: samples}} -> the logs the ranks of a fresh run write."""
    logs: dict[int, ConsumedLog] = {}
    for step, by_rank in steps.items():
        for rank, samples in by_rank.items():
            if rank not in logs:
                logs[rank] = ConsumedLog.open(run, rank, 0)
            logs[rank].append(step, samples)
    for log in logs.values():
        log.close()
    return run


def split(num_steps: int, ranks: int, per_rank: int = 2, offset: int = 0) -> dict[int, dict[int, list[list]]]:
    """Each step takes ranks x per_rank new objects, sample 0 of each, dealt round-robin (offset rotates the deal)."""
    out = {}
    for step in range(num_steps):
        ids = [step * ranks * per_rank + i for i in range(ranks * per_rank)]
        out[step] = {r: [[i, 0] for k, i in enumerate(ids) if (k + offset) % ranks == r] for r in range(ranks)}
    return out


def test_a_restore_drops_the_steps_it_trains_again(tmp_path):
    log = ConsumedLog.open(tmp_path, 0, 0)
    for step in range(5):
        log.append(step, [[step, 0], ["gso", step, 1]])
    log.close()
    with log_path(tmp_path, 0).open("a") as f:
        f.write('{"step": 5, "samples": [[5,')  # killed mid-write
    log = ConsumedLog.open(tmp_path, 0, restored_step=3)  # the checkpoint of step 3: steps 3, 4 are trained again
    assert [line[:11] for line in log_path(tmp_path, 0).read_text().splitlines()] == [
        '{"step": 0,', '{"step": 1,', '{"step": 2,']
    for step in range(3, 6):
        log.append(step, [[step, 0], ["gso", step, 1]])
    log.close()
    report = check(load(tmp_path))
    assert report.ok and report.steps == (0, 1, 2, 3, 4, 5) and report.samples == 12
    # Appending without the truncation records steps 3-5 twice: the audit says so.
    log = ConsumedLog.open(tmp_path, 0, restored_step=6)
    for step in range(3, 6):
        log.append(step, [[step, 0], ["gso", step, 1]])
    log.close()
    report = check(load(tmp_path))
    assert report.rerecorded == {0: (3, 4, 5)} and len(report.repeats) == 6 and not report.ok


def test_gaps_repeats_and_ranks_missing_steps(tmp_path):
    steps = split(7, ranks=2)
    del steps[3]  # no rank recorded step 3
    del steps[2][1]  # rank 1 lost step 2
    steps[4][1].append(steps[1][0][0])  # a sample of step 1 again at step 4
    steps[5][0].append(steps[5][0][0])  # twice in one step
    report = check(load(write_run(tmp_path, steps)))
    assert report.ranks == (0, 1) and report.steps == (0, 1, 2, 4, 5, 6)
    assert report.gaps == (3,) and report.missing == {1: (2,)}
    assert {(r.sample, r.steps) for r in report.repeats} == {((4, 0), (1, 4)), ((20, 0), (5, 5))}
    assert report.samples == 6 * 4 - 2 + 2 and not report.ok
    assert spans([3, 4, 5, 9, 11, 12]) == "3-5, 9, 11-12"


def test_compare_ignores_which_rank_took_a_sample_and_finds_the_step_that_differs(tmp_path):
    a = load(write_run(tmp_path / "a", split(6, ranks=2)))
    # Two ranks dealt the other way, and one rank taking everything: the same samples at every step.
    for other in (split(6, ranks=2, offset=1), {s: {0: by[1] + by[0]} for s, by in split(6, ranks=2).items()}):
        b = load(write_run(tmp_path / uuid.uuid4().hex, other))
        comp = compare(a, b)
        assert comp.ok and comp.compared == 6 and comp.mismatches == ()
    changed = split(5, ranks=2)
    changed[3][1][0] = [99, 1]
    changed[4][0].reverse()  # order within a step does not matter
    comp = compare(a, load(write_run(tmp_path / "c", changed)))
    assert comp.compared == 5 and comp.only_a == (5,) and comp.only_b == () and not comp.ok
    assert [(m.step, m.only_a, m.only_b) for m in comp.mismatches] == [(3, ((13, 0),), ((99, 1),))]


def test_a_run_on_s3_reads_as_it_does_locally(tmp_path, s3_env):
    local = write_run(tmp_path, split(3, ranks=2))
    remote = f"s3://zv-test/{uuid.uuid4().hex}/run"
    for rank in (0, 1):
        storage.upload_file(log_path(local, rank), storage.join(remote, "consumed_ids", f"rank{rank}.jsonl"))
    runs = load(local), load(remote)
    assert runs[0].steps == runs[1].steps and compare(*runs).ok


# --- the command as a person types it -------------------------------------------------------------------------------


def zv_ray(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    return subprocess.run([str(BIN / "zv-ray"), "audit", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_audit_command_passes_a_clean_run_and_names_what_is_wrong(tmp_path):
    clean = write_run(tmp_path / "clean", split(4, ranks=2))
    done = zv_ray(clean, "--against", write_run(tmp_path / "resplit", split(4, ranks=2, offset=1)))
    assert done.returncode == 0 and "audit passed" in done.stdout and "compared 4 steps: 0 took other" in done.stdout
    steps = split(4, ranks=2)
    del steps[1][0]
    steps[3][0][0] = [99, 0]
    done = zv_ray(write_run(tmp_path / "bad", steps), "--against", clean)
    assert done.returncode == 1 and "audit failed" in done.stdout
    assert "A: rank 0 has no record of step 1\n" in done.stdout
    assert "compared 4 steps: 2 took other samples in B than in A" in done.stdout
    assert "first at step 1: only in A none; only in B [4, 0], [6, 0]" in done.stdout


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "nowhere", "is not a folder"),
    (lambda p: p, "is not a run folder (no checkpoint_* and no consumed_ids/)"),
    (lambda p: (p / "checkpoint_2026-01-01_00-00-00.000000").mkdir() or p,
     "has no consumed_ids/rank<r>.jsonl: start the run with --set train.audit_consumed_ids=true"),
])
def test_a_folder_that_is_not_an_audited_run_is_named_with_the_fix(tmp_path, make, expected):
    with pytest.raises(AuditError, match=re.escape(expected)):
        load(make(tmp_path))


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    done = zv_ray(tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {tmp_path} has no consumed_ids/rank<r>.jsonl: start the run with --set " \
                          "train.audit_consumed_ids=true\n"
