"""--resume continues the checkpoint's config: run length and cluster keys may change, nothing else."""

from __future__ import annotations

import pytest
from conftest import tiny

from zv_ray.config import ConfigError, load_config
from zv_ray.model.gslrm import GSLRM
from zv_ray.model.checkpoint import checkpoint_config, save_checkpoint
from zv_ray.train.trainer import resume_changes

def test_the_config_beside_the_weights_is_what_resume_reads(tmp_path):
    cfg = load_config(None, tiny("train.steps=50"))
    save_checkpoint(tmp_path / "run" / "checkpoint_1", model=GSLRM(cfg.model), optimizer=None, step=5, cfg=cfg)
    assert (tmp_path / "run" / "checkpoint_1" / "config.json").is_file()
    assert checkpoint_config(tmp_path / "run") == cfg


def test_longer_runs_and_other_clusters_are_recorded():
    stored = load_config(None, tiny("train.steps=50", "train.global_batch_size=4"))
    cfg = load_config(None, tiny("train.steps=80", "train.global_batch_size=4", "cluster.num_workers=4", "train.stop_after=60"))
    assert resume_changes(stored, cfg) == {
        "cluster.num_workers": (1, 4), "train.steps": (50, 80), "train.stop_after": (None, 60)}
    assert resume_changes(stored, stored) == {}


def test_an_edited_model_or_learning_rate_is_refused_naming_the_keys():
    stored = load_config(None, tiny())
    with pytest.raises(ConfigError, match=r"train.lr: 0.0004 -> 0.001.*new cluster.run_name") as err:
        resume_changes(stored, load_config(None, tiny("train.lr=1e-3", "cluster.num_workers=2")))
    assert "cluster.num_workers" not in str(err.value)
