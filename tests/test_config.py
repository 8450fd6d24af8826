import pytest
import yaml
from conftest import REPO

from zv_ray.config import ConfigError, flatten, load_config

CONFIG_DIR = REPO / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path, tmp_path):
    """Every shipped file loads, survives dump -> load unchanged (nothing is lost or re-derived on the way to a
    worker or a checkpoint), and a file that trains has the views its sampler takes."""
    from zv_ray.config.run import check_training_views

    cfg = load_config(path)
    again = tmp_path / path.name
    again.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert load_config(again) == cfg
    if "train" in yaml.safe_load(path.read_text()):
        check_training_views(cfg)


def test_paper_configs_match_the_papers():
    """RECIPE.md: 80K steps at 256 px, batch 512 (8 on each of 64 GPUs), AdamW 4e-4 with 2K warm-up; then 20K at 512 px, batch 128 (2 per GPU),
    1e-4 with 500 warm-up, initialized from stage 1's run with the same model and objects."""
    stage1, stage2 = load_config(CONFIG_DIR / "paper.yaml"), load_config(CONFIG_DIR / "paper_512.yaml")
    for cfg, want in [(stage1, {"train.steps": 80_000, "train.resolution": 256, "train.global_batch_size": 512, "train.micro_batch_size": 8,
                                "train.lr": 4e-4, "train.warmup_steps": 2000, "loss.perceptual_start_step": 5000,
                                "train.init_from": None}),
                      (stage2, {"train.steps": 20_000, "train.resolution": 512, "train.global_batch_size": 128, "train.micro_batch_size": 2,
                                "train.lr": 1e-4, "train.warmup_steps": 500, "loss.perceptual_start_step": 500})]:
        # LRM-Zero's Table 1 setting: 8 input views; GS-LRM's VGG19 perceptual loss at LRM-Zero's weight.
        both = {"cluster.num_workers": 64, "cluster.use_gpu": True, "train.betas": [0.9, 0.95], "train.weight_decay": 0.05,
                "train.grad_clip": 1.0, "train.skip_grad_norm": 20.0, "loss.perceptual_weight": 0.2,
                "loss.perceptual": "vgg19", "train.num_input_views": 8}
        flat = flatten(cfg)
        assert {k: flat[k] for k in {**both, **want}} == {**both, **want}
    assert stage2.train.init_from == f"{stage1.cluster.storage_path}/{stage1.cluster.run_name}"
    assert stage2.cluster.run_name != stage1.cluster.run_name  # stage 2 must not resume (overwrite) stage 1's run
    assert (stage2.model, stage2.zeroverse, stage2.seed) == (stage1.model, stage1.zeroverse, stage1.seed)
    assert stage2.train.num_target_views == stage1.train.num_target_views


def test_local_configs_fit_this_machine():
    """tiny.yaml runs on 2 CPU cores offline: no GPU, no VGG weights, and more logical CPUs than the trainer holds
    (Ray Data's actors need some: STYLE.md)."""
    tiny = load_config(CONFIG_DIR / "tiny.yaml")
    assert not tiny.cluster.use_gpu and tiny.loss.perceptual_weight == 0
    assert tiny.cluster.local_num_cpus > tiny.cluster.num_workers * tiny.cluster.cpus_per_worker
    gpu = load_config(CONFIG_DIR / "gpu.yaml")  # its comment: every object used once
    assert gpu.data.num_objects * gpu.data.samples_per_object == gpu.train.steps * gpu.train.global_batch_size


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
    assert all("." in k or k in ("seed", "step_scale") for k in flat)


def test_one_knob_scales_every_step_field_of_every_section():
    from zv_ray.config.run import STEP_FIELDS

    short = load_config("configs/paper.yaml", ["train.stop_after=40000", "step_scale=0.01"])
    assert short.step_scale == 1.0  # applied once: a config read back (workers, checkpoints) is not scaled again
    # paper.yaml: 80000 steps, warm-up 2000, checkpoint/log/image/eval every 1000/50/2000/5000, perceptual from 5000.
    assert {k: flatten(short)[k] for k in STEP_FIELDS} == {
        "train.steps": 800, "train.stop_after": 400, "train.warmup_steps": 20, "train.checkpoint_every": 10,
        "train.log_every": 1, "train.image_every": 20, "train.eval_every": 50, "loss.perceptual_start_step": 50}
    assert load_config(None, ["step_scale=2"]).train.steps == 160_000


def test_every_key_has_a_meaning():
    from zv_ray.config.reference import render_reference

    rows = [line for line in render_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 90
    meaning = lambda row: row.rstrip().removesuffix("|").rsplit("|", 1)[-1].strip()  # noqa: E731 - last column
    assert meaning("| `a.b` | `str | None` | `null` |  |") == "" and meaning("| `a` | `int` | `1` | Why. |") == "Why."
    empty = [row.split("|")[1].strip() for row in rows if not meaning(row)]
    assert not empty, f"keys without a comment above their field: {empty}"


def test_configuration_reference_is_current():
    from zv_ray.config.reference import render_reference

    doc = REPO / "docs" / "configuration.md"
    assert doc.read_text() == render_reference(), "regenerate: python -m zv_ray.config.reference > docs/configuration.md"
