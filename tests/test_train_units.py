"""Pure pieces of the training loop: schedule, step skipping, view sampling, checkpoints."""

import math

import pytest
import torch

from zv_ray.config import load_config
from zv_ray.config.model import ModelConfig
from zv_ray.model import GSLRM, TINY
from zv_ray.render.cameras import ring_cameras
from zv_ray.model.checkpoint import config_of, load_checkpoint, save_checkpoint
from zv_ray.train.schedule import lr_at
from zv_ray.train.step import build_optimizer, clipped_step
from zv_ray.inference.views import make_view_batch, pick_training_views, pick_view_indices


def test_schedule_warms_up_then_decays_to_min():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == pytest.approx(0.1)
    values = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_nan_gradient_is_skipped_and_weights_unchanged():
    model, opt = _model_and_opt()
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(3, 4)).sum().backward()
    model.weight.grad[0, 0] = float("nan")
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=1.0, skip_grad_norm=20.0)
    assert outcome.skipped and math.isnan(outcome.grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.state == {} or all(len(s) == 0 for s in opt.state.values())


def test_exploding_gradient_is_skipped():
    model, opt = _model_and_opt()
    before = [p.detach().clone() for p in model.parameters()]
    (1000 * model(torch.randn(3, 4))).sum().backward()
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=1.0, skip_grad_norm=20.0)
    assert outcome.skipped and outcome.grad_norm > 20
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_without_a_threshold_an_exploding_step_is_applied_but_a_non_finite_one_is_not():
    """skip_grad_norm None (the no-safeguards arm): no finite norm is too large; NaN still never reaches the weights."""
    model, opt = _model_and_opt()
    before = [p.detach().clone() for p in model.parameters()]
    (1e6 * model(torch.randn(3, 4))).sum().backward()
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=0.0, skip_grad_norm=None)
    assert not outcome.skipped and outcome.grad_norm > 1e5
    assert not any(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model(torch.randn(3, 4)).sum().backward()
    model.weight.grad[0, 0] = float("inf")
    after_first = [p.detach().clone() for p in model.parameters()]
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=0.0, skip_grad_norm=None)
    assert outcome.skipped and not math.isfinite(outcome.grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(after_first, model.parameters()))


def _sgd_step(grad_scale: float, grad_clip: float):
    """One clipped_step under plain SGD with lr 1, whose update is exactly minus the gradient it was given
    (AdamW would hide clipping: its first step does not depend on the gradient's scale)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    (grad_scale * model(torch.randn(3, 4))).sum().backward()
    raw = torch.cat([p.grad.flatten() for p in model.parameters()])
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=grad_clip, skip_grad_norm=20.0)
    applied = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not outcome.skipped and outcome.grad_norm == pytest.approx(float(raw.norm()), rel=1e-6)  # the raw norm
    return raw, applied


def test_gradient_above_the_clip_is_rescaled_to_the_clip_norm_below_it_is_untouched():
    raw, applied = _sgd_step(grad_scale=1.0, grad_clip=1.0)
    assert 1.0 < raw.norm() < 20  # clipped, not skipped
    torch.testing.assert_close(applied, raw / raw.norm())  # same direction, norm grad_clip
    raw, applied = _sgd_step(grad_scale=1.0, grad_clip=0.0)  # 0 turns clipping off
    torch.testing.assert_close(applied, raw)
    raw, applied = _sgd_step(grad_scale=0.05, grad_clip=1.0)
    assert raw.norm() < 1.0
    torch.testing.assert_close(applied, raw)


def _ring_c2w(num_views: int) -> torch.Tensor:  # [1, V, 4, 4] cameras every 360 / V deg at elevation 0
    return torch.from_numpy(ring_cameras(num_views, [0.0], 2.7, 50.0, 32)[1])[None]


def _angles_to_inputs(c2w: torch.Tensor, row: torch.Tensor, num_inputs: int) -> torch.Tensor:  # [V] deg
    fwd = c2w[0, :, :3, 2]
    cos = (fwd[row[num_inputs:]] @ fwd[row[:num_inputs]].T).amax(dim=1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def test_view_indices_distinct_inputs_first_targets_near_an_input():
    """GS-LRM's rule: targets within 60 deg of some input. 24 views on a ring, 2 inputs: only ~10 of the other 22
    views qualify, so uniform draws would land beyond 60 deg most of the time."""
    c2w = _ring_c2w(24).expand(3, 24, 4, 4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = pick_view_indices(c2w, 2, 4, g)
        assert idx.shape == (3, 6) and all(len(set(row.tolist())) == 6 for row in idx)
        assert all((_angles_to_inputs(c2w, row, 2) <= 60 + 1e-4).all() for row in idx)
    uniform = [pick_view_indices(c2w, 2, 4, g, rule="uniform")[0] for _ in range(20)]
    assert max(float(_angles_to_inputs(c2w, row, 2).max()) for row in uniform) > 60
    with pytest.raises(ValueError, match="only 4"):
        pick_view_indices(c2w[:, :4], 4, 2, g)


def test_too_few_near_views_are_topped_up_with_the_nearest():
    c2w = _ring_c2w(12)  # 30 deg apart: within 35 deg of one input there are only 2 views
    idx = pick_view_indices(c2w, 1, 4, torch.Generator().manual_seed(1), max_angle_deg=35.0)[0]
    assert sorted(_angles_to_inputs(c2w, idx, 1).round().tolist()) == [30.0, 30.0, 60.0, 60.0]


def test_spread_inputs_surround_the_object_random_ones_often_do_not():
    """input_rule "spread": on a ring of 12 views, 4 spread inputs are always 90 deg apart (the evaluation
    protocol's layout); random draws often put two inputs side by side."""
    c2w = _ring_c2w(12)
    g = torch.Generator().manual_seed(0)

    def gaps(row: torch.Tensor) -> list[float]:  # sorted azimuth gaps between the 4 inputs, deg
        az = sorted(float(i) * 30.0 for i in row[:4])
        return sorted([b - a for a, b in zip(az, az[1:])] + [360.0 - az[-1] + az[0]])

    spread = [pick_view_indices(c2w, 4, 4, g, input_rule="spread")[0] for _ in range(20)]
    assert all(gaps(row) == [90.0] * 4 for row in spread)
    assert len({int(row[0]) for row in spread}) > 3  # the first input is still random
    assert all(len(set(row.tolist())) == 8 for row in spread)
    random_rows = [pick_view_indices(c2w, 4, 4, g)[0] for _ in range(20)]
    assert min(gaps(row)[0] for row in random_rows) == 30.0


def test_training_views_follow_the_config():
    cfg = load_config(None, ["train.num_input_views=4", "train.num_target_views=2", "train.input_views=spread"])
    idx = pick_training_views(_ring_c2w(12), cfg.train, torch.Generator().manual_seed(3))
    same = pick_view_indices(_ring_c2w(12), 4, 2, torch.Generator().manual_seed(3), input_rule="spread")
    assert idx.shape == (1, 6) and torch.equal(idx, same)


def test_weight_decay_only_on_matrices():
    """nanoGPT's configure_optimizers: with zero gradients AdamW only decays, and LayerNorm gains must stay 1."""
    cfg = load_config(None, ["train.lr=0.1", "train.weight_decay=0.5"])
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**{**TINY, "bf16": False}))
    optimizer = build_optimizer(model, cfg.train)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if p.dim() < 2:
            assert torch.equal(p, before[name]), name
        else:
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5), msg=name)
    assert any(p.dim() < 2 for p in model.parameters())  # the model has LayerNorm gains to protect


def test_view_batch_resizes_and_scales_intrinsics():
    rgba = torch.full((2, 6, 64, 64, 4), 255, dtype=torch.uint8)
    rgba[..., 0] = 0
    K = torch.tensor([100.0, 100.0, 32.0, 32.0]).expand(2, 6, 4)
    c2w = torch.eye(4).expand(2, 6, 4, 4)
    idx = torch.tensor([[5, 4, 3], [0, 1, 2]])
    vb = make_view_batch(rgba, K, c2w, idx, num_inputs=2, resolution=32)
    assert vb.images.shape == (2, 3, 3, 32, 32)
    assert vb.input_images.shape == (2, 2, 3, 32, 32)
    assert torch.allclose(vb.intrinsics[0, 0], torch.tensor([50.0, 50.0, 16.0, 16.0]))
    assert vb.images[..., 0, :, :].max() == 0 and vb.images[..., 1, :, :].min() == 1


def test_checkpoint_roundtrip_with_weights_only(tmp_path):
    model, opt = _model_and_opt()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    cfg = load_config(None, ["train.lr=0.123"])
    save_checkpoint(tmp_path / "ckpt", model=model, optimizer=opt, step=7, cfg=cfg, extra={"skipped_total": 2})
    payload = load_checkpoint(tmp_path)  # a run folder: finds the checkpoint inside
    assert payload["step"] == 7 and payload["extra"]["skipped_total"] == 2
    assert config_of(payload).train.lr == 0.123
    fresh, fresh_opt = _model_and_opt()
    fresh.load_state_dict(payload["model"])
    fresh_opt.load_state_dict(payload["optimizer"])
    assert torch.equal(fresh.weight, model.weight)
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_bad_checkpoint_file_is_named(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a zv-ray checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def plan_of(cfg):
    """The config's data plan, as the loop builds it (one zeroverse source of data.num_objects objects)."""
    from zv_ray.data.plan import DataPlan

    return DataPlan.from_config(cfg, [cfg.data.num_objects])


def _schedule_config(**train):
    from zv_ray.config import RunConfig

    return RunConfig(train={"steps": 10, "warmup_steps": 1, "log_every": 3, "checkpoint_every": 4, "eval_every": 6,
                            **train})


def test_every_rank_reports_on_the_same_steps_and_only_rank0_evaluates():
    """Ray Train's report is a barrier: a rank that reports once more or less than the others hangs the run."""
    from zv_ray.train.checkpointer import Checkpointer
    from zv_ray.train.evaluator import Evaluator
    from zv_ray.train.worker import LoopState

    cfg = _schedule_config()
    seen = {}
    for rank in (0, 1, 3):
        checkpointer, evaluator = Checkpointer(cfg, rank, plan_of(cfg)), Evaluator(cfg, rank, None, None)
        state, reports, evals = LoopState(last_step=10), [], []
        for step in range(1, 11):
            state.step = step
            report, checkpoint = checkpointer.reports(state)
            reports += [(step, checkpoint)] if report else []
            evals += [step] if evaluator.due(state) else []
        seen[rank] = reports
        # Evaluations only on logging steps (their scores travel in that report), on rank 0, and at the end.
        assert evals == ([6, 10] if rank == 0 else [])
    assert seen[0] == seen[1] == seen[3]
    assert seen[0] == [(3, False), (4, True), (6, False), (8, True), (9, False), (10, True)]


def test_divergence_is_final_report_and_checkpoint_then():
    from zv_ray.train.checkpointer import Checkpointer
    from zv_ray.train.step import StepOutcome
    from zv_ray.train.worker import LoopState

    state = LoopState(last_step=10)
    for _ in range(5):
        state.advance(StepOutcome(float("nan"), skipped=True), max_consecutive_skips=5)
    assert state.step == 5 and state.diverged and state.final
    assert Checkpointer(_schedule_config(), 1, plan_of(_schedule_config())).reports(state) == (True, True)


def test_train_step_gates_the_perceptual_term_by_its_start_step():
    """The loop's step with a perceptual weight > 0 (a randomly initialised LPIPS network stands in for the
    VGG weights this machine lacks): MSE only before loss.perceptual_start_step, MSE + w x perceptual from it."""
    from zv_ray.config import RunConfig
    from zv_ray.losses.perceptual import LPIPS
    from zv_ray.splat.synthetic import blob_views
    from zv_ray.train.step import perceptual_net_for, train_step

    cfg = RunConfig(model=ModelConfig(**TINY), loss={"perceptual_weight": 0.5, "perceptual_start_step": 2},
                    train={"resolution": 32, "num_input_views": 2, "num_target_views": 2, "warmup_steps": 0})
    assert perceptual_net_for(cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"perceptual_weight": 0.0})}),
                              "cpu") is None
    images, intrinsics, c2w = blob_views(4, 32)
    rgb = (images.permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8)
    batch = make_view_batch(rgb, intrinsics, c2w, None, 2, 32)
    torch.manual_seed(0)
    model, net = GSLRM(cfg.model), LPIPS().requires_grad_(False).eval()
    optimizer = build_optimizer(model, cfg.train)
    params = list(model.parameters())
    before = train_step(model, optimizer, params, batch, cfg, 0, net)
    assert before.terms["perceptual"] == 0.0 and before.loss == pytest.approx(before.terms["mse"])
    assert before.lr == pytest.approx(cfg.train.lr) and not before.outcome.skipped
    after = train_step(model, optimizer, params, batch, cfg, 2, net)
    assert after.terms["perceptual"] != 0  # random linear heads: either sign
    assert after.loss == pytest.approx(after.terms["mse"] + 0.5 * after.terms["perceptual"], rel=1e-5)
    assert after.pred.shape == (1, 4, 3, 32, 32) and not after.pred.requires_grad
