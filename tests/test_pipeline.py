"""Ray Data pipelines on a local Ray: every requested unit's samples exactly once, in order, through an actor crash,
and the `zv-ray dataset` command's Parquet shards, which read back (directly and as a training stream) to the pixels
the training stream rendered for the same cameras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from conftest import tiny
from typer.testing import CliRunner

from actors.render import FAULT_ENV
from zv_ray.config import load_config
from zv_ray.data.parquet import read_shards, valid_shards
from zv_ray.data.plan import DataPlan
from zv_ray.data.schema import SCHEMA
from zv_ray.pipeline import source_sets, unit_stream, write_dataset

pytestmark = pytest.mark.timeout(180)

# The tiny recipe streamed (not materialized) by two actors at 32 px, 4-view renders of finer meshes.
TINY = tiny(
    "zeroverse.mesh_resolution=12",
    "render.num_views=4",
    "train.resolution=32",
    "data.materialize=false",
    "data.num_generator_actors=2",
    "data.samples_per_object=3",
    "data.shuffle_window=3",
    "data.num_objects=6",
    "data.first_object_id=100",
    "train.global_batch_size=6",  # 6 steps x 6 = 36 samples: two passes over 6 ids x 3 samples
)
STEPS = 6


def stream(cfg) -> list[dict]:
    """The units of STEPS steps of every slot (one worker), through the worker's stream, in the order it yields them."""
    sources = source_sets(cfg)
    plan = DataPlan.from_config(cfg, [s["count"] for s in sources])
    units = plan.units_for(range(plan.batch), 0, STEPS)
    source, index, visit = plan.locate(units)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    table = pa.table({"unit": units, "source": source, "index": index, "view_pass": visit})
    return list(unit_stream(cfg, sources, table, 2).iter_batches(batch_size=None))


@pytest.fixture(scope="module")
def fault_marker(tmp_path_factory):
    """A local Ray whose workers watch a fault-drill file: touching it makes one actor crash once."""
    marker = tmp_path_factory.mktemp("drill") / "armed"
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {FAULT_ENV: str(marker)}})
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def streamed(fault_marker) -> dict[int, list[dict]]:
    """Ids 100..105 through a worker's stream (two passes), while one of the two actors crashes once: Ray restarts
    it and retries its batch. Checks the units come in unit order; returns each object's samples."""
    fault_marker.touch()
    batches = stream(load_config(None, TINY))
    assert not fault_marker.exists(), "the fault drill did not fire"
    units = [int(u) for b in batches for u in b["unit"][:: b["sample"].max() + 1]]
    assert units == sorted(units) and len(units) == len(set(units)) == 12  # the feed takes them in this order
    rows: dict[int, list[dict]] = {}
    for batch in batches:
        assert batch["rgb"].shape[1:] == (4, 32, 32, 3) and batch["c2w"].shape[1:] == (4, 4, 4)
        for k, object_id in enumerate(batch["object_id"].tolist()):
            rows.setdefault(object_id, []).append({key: batch[key][k] for key in ("rgb", "intrinsics", "c2w")})
    return rows


def test_stream_yields_each_requested_unit_once_through_an_actor_crash(streamed):
    assert sorted(streamed) == list(range(100, 106))
    assert all(len(samples) == 6 for samples in streamed.values()), {i: len(s) for i, s in streamed.items()}
    first = streamed[100]
    assert first[0]["rgb"].dtype == np.uint8 and (first[0]["rgb"] < 255).any()
    # The samples of one object take different view subsets of its cameras, and each pass draws new ones.
    assert len({s["c2w"].tobytes() for s in first}) > 1


def test_dataset_command_writes_shards_with_the_streamed_pixels(streamed, tmp_path):
    from zv_ray.cli import app

    args = ["dataset", "--n", "6", "--first-id", "100", "--out", str(tmp_path), "--views", "4", "--res", "32"]
    for item in [*TINY, "data.objects_per_shard=4"]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 objects, 24 views" in result.output and "objects/s" in result.output
    assert (tmp_path / "contact_sheet.png").stat().st_size > 10_000
    shards = valid_shards(tmp_path)
    assert len(shards) >= 2 and all(pq.read_schema(p).equals(SCHEMA, check_metadata=False) for p in shards)
    summary = json.loads((tmp_path / "dataset.json").read_text())["summary"]
    assert summary["objects"] == 6 and summary["bytes"] == sum(Path(p).stat().st_size for p in shards)
    stored = {int(r["object_id"]): r for r in read_shards(tmp_path)}
    assert sorted(stored) == list(range(100, 106))
    for object_id, samples in streamed.items():  # other actors, a crash and a PNG round trip later: identical
        record = stored[object_id]
        for sample in samples:
            for view, pose in enumerate(sample["c2w"]):
                (match,) = np.flatnonzero((record["c2w"] == pose).all(axis=(1, 2)))  # the same camera of the pool
                np.testing.assert_array_equal(record["rgba"][match, ..., :3], sample["rgb"][view])
                np.testing.assert_array_equal(record["intrinsics"][match], sample["intrinsics"][view])
    with pytest.raises(FileExistsError, match="already holds shards"):
        write_dataset(load_config(None, TINY), tmp_path, count=1)

    # Trained from these shards, each object serves the very samples the online stream served: the same views
    # of the same cameras, chosen in one place (records.sample_picks, pure in seed, id and view pass).
    from_parquet = load_config(None, [*TINY, f"data.sources=[{{kind: parquet, path: {tmp_path}}}]"])
    from_shards: dict[int, list[dict]] = {}
    for batch in stream(from_parquet):
        for k, object_id in enumerate(batch["object_id"].tolist()):
            from_shards.setdefault(object_id, []).append({key: batch[key][k] for key in ("rgb", "intrinsics", "c2w")})
    assert sorted(from_shards) == list(range(100, 106))
    key = lambda s: (s["c2w"].tobytes(), s["intrinsics"].tobytes(), s["rgb"].tobytes())  # noqa: E731
    for object_id, samples in streamed.items():
        assert sorted(map(key, from_shards[object_id])) == sorted(map(key, samples))
