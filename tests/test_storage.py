"""The one storage layer, on a local folder and on a real S3-compatible server: same calls, same results."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from zv_ray.config import load_config
from zv_ray.data.parquet import read_shards, valid_shards, write_shard
from zv_ray.pipeline import check_output_folder
from zv_ray.data.schema import records_to_table
from zv_ray.io import storage
from zv_ray.model.gslrm import GSLRM
from zv_ray.model.checkpoint import load_checkpoint, resolve_checkpoint_file, save_checkpoint

from test_data import fake_record


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return f"s3://zv-test/{uuid.uuid4().hex}"


def test_bytes_round_trip_listing_and_probe(root):
    assert not storage.exists(root)
    storage.write_bytes(storage.join(root, "a", "x.bin"), b"one")
    storage.write_bytes(storage.join(root, "a", "y.txt"), b"two")
    storage.write_bytes(storage.join(root, "a", ".hidden.txt"), b"tmp")
    assert storage.read_bytes(storage.join(root, "a", "x.bin")) == b"one"
    assert storage.is_dir(storage.join(root, "a")) and storage.is_file(storage.join(root, "a", "y.txt"))
    assert storage.list_files(storage.join(root, "a"), ".txt") == [storage.join(root, "a", "y.txt")]
    assert storage.size(storage.join(root, "a", "x.bin")) == 3
    storage.check_writable(root)
    assert storage.list_files(root, recursive=True) == [storage.join(root, "a", "x.bin"), storage.join(root, "a", "y.txt")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.read_bytes(storage.join(root, "missing"))


def test_checkpoints_resolve_to_the_latest_and_load(root, tmp_path):
    cfg = load_config(None, ["model.width=16", "model.depth=1", "model.num_heads=2"])
    model = GSLRM(cfg.model)
    for step, folder in ((3, "checkpoint_2026-01-01_00-00-01.000000"), (6, "checkpoint_2026-01-01_00-00-09.000000")):
        local = save_checkpoint(tmp_path / folder, model=model, optimizer=None, step=step, cfg=cfg)
        storage.upload_file(local, storage.join(root, "run", folder, local.name))
    assert resolve_checkpoint_file(storage.join(root, "run")).endswith("00-00-09.000000/checkpoint.pt")
    payload = load_checkpoint(storage.join(root, "run"))
    assert payload["step"] == 6
    # Once Ray Train has registered checkpoints, a newer folder it never registered (an upload cut short by a storage
    # outage) is not picked.
    snapshot = {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_2026-01-01_00-00-01.000000"}}
    storage.write_bytes(storage.join(root, "run", "checkpoint_manager_snapshot.json"), json.dumps(snapshot).encode())
    assert load_checkpoint(storage.join(root, "run"))["step"] == 3
    assert torch.equal(payload["model"]["head.weight"], model.state_dict()["head.weight"])
    storage.write_bytes(storage.join(root, "junk.pt"), b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a zv-ray checkpoint") as err:
        load_checkpoint(storage.join(root, "junk.pt"))
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(storage.join(root, "nothing-here"))


def test_parquet_shards_write_validate_and_read(root):
    path = write_shard(records_to_table([fake_record(i) for i in (4, 2)], "png"), storage.join(root, "ds"))
    assert path == storage.join(root, "ds", "shard-000000000002.parquet")
    assert valid_shards(storage.join(root, "ds")) == [path]
    assert [r["object_id"] for r in read_shards(storage.join(root, "ds"))] == [4, 2]
    with pytest.raises(FileExistsError, match="already holds shards"):
        check_output_folder(storage.join(root, "ds"))
    with pytest.raises(FileExistsError, match="is a file"):
        check_output_folder(path)


def test_a_missing_bucket_is_named_before_any_work(s3_env):
    with pytest.raises(storage.StorageError, match="s3://no-such-bucket/ds"):
        check_output_folder("s3://no-such-bucket/ds")


def test_local_paths_become_absolute_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("runs") == str(tmp_path / "runs")
    assert storage.absolute("s3://b/runs") == "s3://b/runs"
    assert storage.join("s3://b/runs/", "/tiny") == "s3://b/runs/tiny"
    assert storage.name("s3://b/runs/tiny/") == "tiny"
