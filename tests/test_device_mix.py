"""Device mixing without a GPU: the training path with every tensor on PyTorch's `meta` device.

Inside a Ray Train worker the batches from `iter_torch_batches` and the model are already on the GPU, and
a tensor made on the CPU among them crashes the step (issue 12, breakers 1 and 2). Meta tensors have
shape, dtype and device but no data, and mixing them with a CPU tensor raises just as CUDA does, so these
tests catch that on a CPU-only machine. What needs data is out of reach: the torch rasterizer's tile
binning (`nonzero`, then `.tolist()`) is where the dispatch test stops.
"""

import contextlib

import pytest
import torch

from zv_ray.config import RunConfig
from zv_ray.config.model import ModelConfig
from zv_ray.model import GSLRM, TINY
from zv_ray.splat.synthetic import ring
from zv_ray.model.checkpoint import load_checkpoint, save_checkpoint
from zv_ray.inference.predict import predict_and_render
from zv_ray.train.step import build_optimizer
from zv_ray.train.worker import build_training_state
from zv_ray.inference.views import make_view_batch, pick_view_indices

DEVICE = torch.device("meta")
RENDER_RES, TRAIN_RES, VIEWS = 64, 32, 12  # the renders differ from the training resolution, as in configs/paper.yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def meta_autocast(monkeypatch):
    """torch.autocast refuses device_type='meta'. Every autocast on the training path is disabled off
    CUDA (bf16 is CUDA-only), so on meta a disabled autocast is a no-op; an enabled one fails the test."""
    real = torch.autocast

    def autocast(device_type, *args, enabled=True, **kwargs):
        if device_type != "meta":
            return real(device_type, *args, enabled=enabled, **kwargs)
        assert not enabled, "autocast enabled on a non-CUDA device"
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", autocast)


def _cfg() -> RunConfig:
    return RunConfig(
        model=ModelConfig(**TINY, bf16=True, grad_checkpoint=True),
        train={"resolution": TRAIN_RES, "global_batch_size": 2, "num_input_views": 4, "num_target_views": 4},
    )


def _to_device(model: torch.nn.Module) -> torch.nn.Module:
    """Move like prepare_model's `.to(cuda)`: the Parameter objects stay, their data moves. CPU -> meta
    would otherwise make new Parameters, and an optimizer built before the move would silently keep the
    old CPU ones instead of failing as it does on a GPU."""
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        return model.to(DEVICE)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


def _device_batch(cfg: RunConfig):
    """What the loop builds from one Ray batch that is already on the device. The view choice reads camera
    values, which meta lacks, so it runs on the same cameras on the CPU: its indices are CPU tensors."""
    b, tc = cfg.train.global_batch_size, cfg.train
    rgba = torch.empty(b, VIEWS, RENDER_RES, RENDER_RES, 4, dtype=torch.uint8, device=DEVICE)
    intrinsics, c2w = (t.expand(b, *t.shape[1:]) for t in ring(VIEWS, RENDER_RES))
    idx = pick_view_indices(c2w, tc.num_input_views, tc.num_target_views, torch.Generator().manual_seed(0))
    return make_view_batch(rgba, intrinsics.to(DEVICE), c2w.to(DEVICE), idx, tc.num_input_views, tc.resolution).to(DEVICE)


def test_view_batch_resized_on_device():
    batch = _device_batch(_cfg())
    assert batch.images.shape == (2, 8, 3, TRAIN_RES, TRAIN_RES)
    assert batch.intrinsics.shape == (2, 8, 4) and batch.c2w.shape == (2, 8, 4, 4)
    assert {t.device for t in (batch.images, batch.intrinsics, batch.c2w)} == {DEVICE}


def test_model_forward_and_backward_on_device(meta_autocast):
    cfg = _cfg()
    batch = _device_batch(cfg)
    model = _to_device(GSLRM(cfg.model))
    g = model(batch.input_images, batch.input_intrinsics, batch.input_c2w)
    fields = (g.means, g.scales, g.quats, g.opacities, g.colors)
    assert g.means.shape == (2, 4 * TRAIN_RES * TRAIN_RES, 3)
    assert all(t.device == DEVICE and t.dtype == torch.float32 for t in fields)
    sum(t.sum() for t in fields).backward()  # through the gradient-checkpointed blocks' recomputation
    assert all(p.grad is not None and p.grad.device == DEVICE for p in model.parameters())


def test_render_dispatch_on_device_reaches_tile_binning(meta_autocast):
    """The loop's predict_and_render: model, background, camera conversion, dispatch and projection run on
    meta; the first op that needs values is the tile binning's nonzero, which meta cannot answer. A CPU
    tensor anywhere before it raises a RuntimeError about devices instead, and the test fails."""
    cfg = _cfg()
    model = _to_device(GSLRM(cfg.model))
    with pytest.raises(NotImplementedError, match="nonzero") as err:
        predict_and_render(model, _device_batch(cfg), cfg)
    assert "_tile_lists" in {entry.name for entry in err.traceback}


def test_optimizer_state_saved_on_cpu_loads_onto_the_device(tmp_path):
    """Resume as the loop does it (worker.build_training_state): weights loaded, model moved, then the optimizer
    built and its state loaded."""
    cfg = _cfg()
    source = GSLRM(cfg.model)
    optimizer = build_optimizer(source, cfg.train)
    for p in source.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()  # AdamW state (exp_avg, exp_avg_sq) exists, on the CPU
    save_checkpoint(tmp_path, model=source, optimizer=optimizer, step=1, cfg=cfg)

    # The loop's own restore, with the device move where Ray Train's prepare_model does it.
    model, optimizer, state = build_training_state(cfg, load_checkpoint(tmp_path), prepare=_to_device)
    assert state.step == 1

    params = list(model.parameters())
    assert len(optimizer.state) == len(params)
    for p in params:
        moments = {k: v for k, v in optimizer.state[p].items() if k != "step"}  # AdamW keeps `step` on the CPU by design
        assert p.device == DEVICE and moments and {v.device for v in moments.values()} == {DEVICE}
        p.grad = torch.empty_like(p)
    optimizer.step()  # raises on any CPU state beside meta parameters
