from pathlib import Path

import pytest

from zv_ray.config import ConfigError, RunConfig, flatten, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 10\n")
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        load_config(bad)


def test_out_of_range_value_is_named():
    with pytest.raises(ConfigError, match=r"zeroverse\.p_boolean"):
        load_config(None, ["zeroverse.p_boolean=1.5"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.steps"):
        load_config(None, ["train.steps=lots"])


def test_training_view_check_names_both_keys_but_other_commands_accept_few_views():
    from zv_ray.train.trainer import check_before_cluster_work

    cfg = load_config(None, ["render.num_views=4", "loss.perceptual_weight=0"])  # fine for `zv-ray dataset`
    with pytest.raises(ConfigError, match=r"train\.num_input_views \+ train\.num_target_views = 8 exceeds render\.num_views"):
        check_before_cluster_work(cfg)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_and_flatten():
    cfg = load_config(None, ["train.lr=0.001", "cluster.run_name=abc"])
    flat = flatten(cfg)
    assert flat["train.lr"] == 0.001 and flat["cluster.run_name"] == "abc"
    assert all("." in k or k == "seed" for k in flat)


def test_scaled_shortens_every_step_field():
    tc = load_config(None, []).train.scaled(0.01)
    assert tc.steps == 800 and tc.warmup_steps == 20 and tc.checkpoint_every == 10


def test_configuration_reference_is_current():
    from zv_ray.config.reference import render_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == render_reference(), "regenerate: python -m zv_ray.config.reference > docs/configuration.md"
