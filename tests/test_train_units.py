"""Pure pieces of the training loop: schedule, step skipping, view sampling, checkpoints."""

import math

import pytest
import torch

from zv_ray.config import load_config
from zv_ray.train.checkpoint import config_of, load_checkpoint, save_checkpoint
from zv_ray.train.schedule import lr_at
from zv_ray.train.step import clipped_step
from zv_ray.train.views import fixed_view_indices, make_view_batch, pick_view_indices


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


def test_exploding_gradient_is_skipped_normal_one_is_clipped():
    model, opt = _model_and_opt()
    (1000 * model(torch.randn(3, 4))).sum().backward()
    assert clipped_step(list(model.parameters()), opt, grad_clip=1.0, skip_grad_norm=20.0).skipped
    model(torch.randn(3, 4)).sum().backward()
    before = model.weight.detach().clone()
    outcome = clipped_step(list(model.parameters()), opt, grad_clip=1.0, skip_grad_norm=20.0)
    assert not outcome.skipped and not torch.equal(before, model.weight)


def test_view_indices_distinct_and_inputs_first():
    g = torch.Generator().manual_seed(0)
    idx = pick_view_indices(8, 4, 2, batch=3, generator=g)
    assert idx.shape == (3, 6)
    assert all(len(set(row.tolist())) == 6 for row in idx)
    fixed = fixed_view_indices(32, 4, 4, batch=2)
    assert fixed[0, :4].tolist() == [0, 10, 21, 31] and not set(fixed[0, 4:].tolist()) & set(fixed[0, :4].tolist())
    with pytest.raises(ValueError, match="only 4"):
        pick_view_indices(4, 4, 2, batch=1, generator=g)


def test_view_batch_resizes_and_scales_intrinsics():
    rgba = torch.full((2, 6, 64, 64, 4), 255, dtype=torch.uint8)
    rgba[..., 0] = 0
    K = torch.tensor([100.0, 100.0, 32.0, 32.0]).expand(2, 6, 4)
    c2w = torch.eye(4).expand(2, 6, 4, 4)
    idx = torch.tensor([[5, 4, 3], [0, 1, 2]])
    vb = make_view_batch(rgba, K, c2w, idx, num_inputs=2, resolution=32)
    assert vb.images.shape == (2, 3, 3, 32, 32) and vb.alphas.shape == (2, 3, 1, 32, 32)
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
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
