"""The GPU check (issue 12): one prepared run on a lent GPU that measures what the CPU suite cannot.

    # on the device machine, as one `run` call (docs/gpu_check.md: the exact command and its carry list)
    python3 scripts/gpu_check.py --out $OUT --budget 480
    # here: the same steps at toy sizes on the CPU, to prove the plumbing
    .venv/bin/python scripts/gpu_check.py --cpu-dry-run --out outputs/gpu_check
    # again, some steps only
    python3 scripts/gpu_check.py --out $OUT --only gsplat_compile,paper_256

Each step appends its record to <out>/gpu_check.json as soon as it ends, so a run cut short keeps what it
measured; <out>/gpu_check.log holds the output. The steps run in a child process that this one watches (it
imports no torch): a step past its limit is killed, and after a step that raised or crashed a fresh child
takes the remaining ones, since a failed CUDA step can leave its context unusable. A step that would not fit
the wall-clock budget is skipped and says so. Ray does not run there: batches are built as Ray Train's
iter_torch_batches hands them to a GPU worker, already on the device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "@@gpu_check "  # child -> parent: {"start": step} | {"share": {...}} | {"record": {...}}
NVIDIA_EGL_VENDOR = Path("/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json")
# Toy sizes for --cpu-dry-run (the TINY model, one object, 12 rendered views).
TOY = ("model.width=128", "model.depth=4", "model.num_heads=4", "train.batch_size_per_worker=1", "render.num_views=12")
# The model steps time the paper configs at GS-LRM's 4 + 4 views, the figures recorded so far; the configs train
# LRM-Zero's 8 input views (2.8x the FLOPs per step at 256 px), not measured here yet.
GSLRM_VIEWS = ("train.num_input_views=4",)
INT32_MAX = 2**31 - 1  # gsplat indexes tile intersections with int32


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[["Context"], dict]
    estimate_s: float  # typical seconds on an H200: a step is skipped when less than this is left
    limit_s: float  # killed past this
    cuda_only: bool


STEPS: dict[str, Step] = {}  # in run order


def step(estimate_s: float, limit_s: float, cuda_only: bool = False):
    def register(fn: Callable[["Context"], dict]) -> Callable[["Context"], dict]:
        STEPS[fn.__name__] = Step(fn.__name__, fn, estimate_s, limit_s, cuda_only)
        return fn

    return register


def emit(message: dict) -> None:
    print(PROTOCOL + json.dumps(message, default=str), flush=True)


class Context:
    """What a step gets: the device, toy or real sizes, and values shared by earlier steps (also across children)."""

    def __init__(self, dry: bool, shared: dict[str, Any]):
        import torch

        self.dry = dry
        self.shared = shared
        self.device = torch.device("cpu" if dry else "cuda")
        if not dry:  # as train_loop_per_worker sets them on a GPU
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def share(self, **values: Any) -> None:
        self.shared.update(values)
        emit({"share": values})

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def config(self, path: str, overrides: tuple[str, ...] = (), toy: tuple[str, ...] = ()):
        """A repo config with overrides; in the dry run also TOY and the step's `toy` overrides."""
        from zv_ray.config import load_config

        return load_config(REPO / path, [*overrides, *((*TOY, *toy) if self.dry else ())])

    def rasterizer(self) -> str:
        """gsplat once gsplat_compile built it; before that (or when it failed) the torch rasterizer, so no
        step starts a compile of its own."""
        return "auto" if self.shared.get("gsplat") == "ok" else "torch"


# ---------------------------------------------------------------------------------------------- shared parts


def sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits: toy figures in the dry run stay readable."""
    return float(f"{x:.{digits}g}")


def attempt(fn: Callable[[], Any]) -> tuple[Any, str]:
    """(value, "ok") or (None, "ErrorType: message"): a reproduction records its error and goes on."""
    try:
        return fn(), "ok"
    except Exception as err:  # noqa: BLE001 - the error is the figure
        return None, f"{type(err).__name__}: {err}"[:600]


def ray_batch(cfg, device, seed: int = 0) -> dict:
    """One batch of the object stream as iter_torch_batches yields it in a GPU train worker: on the device."""
    import numpy as np
    import torch

    from zv_ray.render.cameras import sample_cameras

    b, r = cfg.train.batch_size_per_worker, cfg.render
    cams = [sample_cameras(np.random.default_rng(seed + i), r) for i in range(b)]
    torch.manual_seed(seed)
    return {
        "object_id": torch.arange(b, device=device),
        "rgba": torch.randint(0, 256, (b, r.num_views, r.resolution, r.resolution, 4), dtype=torch.uint8, device=device),
        "intrinsics": torch.from_numpy(np.stack([k for k, _ in cams])).to(device),
        "c2w": torch.from_numpy(np.stack([c for _, c in cams])).to(device),
    }


def view_batch(cfg, raw: dict, device, indices=None):
    """make_view_batch as the loop calls it; by default the first input + target views of every object."""
    import torch

    from zv_ray.inference.views import make_view_batch

    tc = cfg.train
    if indices is None:
        indices = torch.arange(tc.num_input_views + tc.num_target_views).expand(raw["rgba"].shape[0], -1)
    return make_view_batch(raw["rgba"], raw["intrinsics"], raw["c2w"], indices, tc.num_input_views, tc.resolution).to(device)


def trainer(cfg, device, wrap: Callable | None = None):
    """Model on the device (wrapped, e.g. in DDP, as prepare_model does), then its optimizer, as in the loop.
    Built on the device directly: initialising 300M parameters on the CPU first would only cost time."""
    import torch

    from zv_ray.model import GSLRM
    from zv_ray.train.step import build_optimizer

    torch.manual_seed(cfg.seed)
    with torch.device(device):
        model = GSLRM(cfg.model)
    model = wrap(model) if wrap else model
    return model, build_optimizer(model, cfg.train), [p for p in model.parameters() if p.requires_grad]


def random_lpips(device):
    """LPIPS with randomly initialised VGG and linear layers: no VGG weights exist offline, so this times the
    network the loss runs, not the metric."""
    from zv_ray.losses.perceptual import LPIPS

    return LPIPS().requires_grad_(False).eval().to(device)


def training_figures(ctx: Context, cfg, warmup: int, timed: int) -> dict:
    """Step time, peak memory and MFU of the loop's step on one worker, with a per-part split of one more step."""
    import torch

    from zv_ray.model import flops_per_step, num_params
    from zv_ray.train.step import train_step

    dev, tc = ctx.device, cfg.train
    model, optimizer, params = trainer(cfg, dev)
    lpips_net = random_lpips(dev)
    raw = ray_batch(cfg, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, norms = [], []
    for i in range(warmup + timed):
        ctx.sync()
        start = time.perf_counter()
        result = train_step(model, optimizer, params, view_batch(cfg, raw, dev), cfg, i, lpips_net)
        ctx.sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            norms.append(round(result.outcome.grad_norm, 4))

    parts: dict[str, float] = {}
    clock = [time.perf_counter()]

    def mark(name: str) -> None:
        ctx.sync()
        now = time.perf_counter()
        parts[name] = round(now - clock[0], 4)
        clock[0] = now

    batch = view_batch(cfg, raw, dev)
    mark("view_batch")
    train_step(model, optimizer, params, batch, cfg, warmup + timed, lpips_net, mark=mark)

    step_s = statistics.median(times)
    flops = flops_per_step(cfg.model, tc.batch_size_per_worker, tc.num_input_views, tc.resolution)
    peak = ctx.shared.get("peak_tflops")
    return {
        "params_m": round(num_params(model) / 1e6, 1),
        "batch": tc.batch_size_per_worker,
        "resolution": tc.resolution,
        "views": f"{tc.num_input_views}+{tc.num_target_views}",
        "bf16": cfg.model.bf16,
        "grad_checkpoint": cfg.model.grad_checkpoint,
        "rasterizer": cfg.model.rasterizer,
        "lpips": "on, random VGG (timing only)",
        "step_s_median": round(step_s, 4),
        "step_s_all": [round(t, 4) for t in times],
        "samples_per_s": round(tc.batch_size_per_worker / step_s, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
        "model_tflop_per_step": sig(flops / 1e12),
        "achieved_tflops": sig(flops / step_s / 1e12),
        # Model FLOPs only (no rasterization, LPIPS or checkpoint recompute) over the whole step's time.
        "mfu": sig(flops / step_s / 1e12 / peak, 3) if peak else None,
        "grad_norms": norms,
        "parts_s (one synchronized step)": parts,
    }


def free_device_memory(ctx: Context) -> None:
    import gc

    import torch

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- steps


@step(estimate_s=8, limit_s=60)
def environment(ctx: Context) -> dict:
    """Python, torch, CUDA runtime and nvcc majors, the card, the packages the check carries."""
    import platform
    import shutil

    import torch

    from zv_ray.splat.backend import gsplat_version, nvcc_cuda_version, toolchain_problem

    if not ctx.dry and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here: on a CPU machine run with --cpu-dry-run")
    nvcc = nvcc_cuda_version()
    rec: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvcc": nvcc,
        "cuda_majors_match": None if not (nvcc and torch.version.cuda) else nvcc.split(".")[0] == torch.version.cuda.split(".")[0],
        "gsplat": str(gsplat_version()),
        "gsplat_toolchain_problem": toolchain_problem(),
        "cpus": os.cpu_count(),
        "packages": {d: _version(d) for d in ("numpy", "pydantic", "trimesh", "manifold3d", "pyrender", "PyOpenGL", "triton")},
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.update(card=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
        if shutil.which("nvidia-smi"):
            rec["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        ctx.share(card=props.name)
    rec["headline"] = f"{rec.get('card', 'cpu')}, torch {rec['torch']} (CUDA {rec['torch_cuda']}), nvcc {nvcc}, gsplat {rec['gsplat']}"
    return rec


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@step(estimate_s=10, limit_s=60)
def matmul_peak(ctx: Context) -> dict:
    """The bf16 matrix-product rate on random data (8192^3; fp32 512^3 in the dry run), the MFU denominator:
    the mean of ten back-to-back products after three warm-ups (as KINDS.md measured it), median of three."""
    import torch

    n, dtype = (512, torch.float32) if ctx.dry else (8192, torch.bfloat16)
    a, b = (torch.randn(n, n, device=ctx.device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b

    def mean_of_ten() -> float:
        ctx.sync()
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        ctx.sync()
        return (time.perf_counter() - start) / 10

    times = [mean_of_ten() for _ in range(3)]
    tflops = 2 * n**3 / statistics.median(times) / 1e12
    ctx.share(peak_tflops=tflops)
    return {"n": n, "dtype": str(dtype), "tflops_median": sig(tflops),
            "tflops_best": sig(2 * n**3 / min(times) / 1e12), "headline": f"{tflops:.3g} TFLOP/s {dtype}"}


@step(estimate_s=20, limit_s=120)
def breakers(ctx: Context) -> dict:
    """Issue 12 breakers 1, 2 and 11 on a batch already on the device: the old code's failure and the loop's path."""
    import torch

    from zv_ray.model import GSLRM
    from zv_ray.model.checkpoint import load_checkpoint, save_checkpoint
    from zv_ray.train.step import build_optimizer, train_step
    from zv_ray.inference.views import pick_training_views

    dev = ctx.device
    # Renders at 64 px, trained at 32 px: the resize that scales the intrinsics (breaker 1).
    cfg = ctx.config("configs/tiny.yaml", ("model.bf16=true", f"model.rasterizer={ctx.rasterizer()}", "loss.perceptual_weight=0.2"))
    tc = cfg.train
    raw = ray_batch(cfg, dev)
    lpips_net = random_lpips(dev)
    rec: dict[str, Any] = {"render_resolution": cfg.render.resolution, "train_resolution": tc.resolution,
                           "rasterizer": cfg.model.rasterizer}

    # Breaker 1 as it was: a CPU scale vector multiplied into the device intrinsics.
    rec["b1_old_cpu_scale"] = attempt(lambda: raw["intrinsics"] * torch.tensor([0.5, 0.5, 0.5, 0.5]))[1]
    rng = torch.Generator().manual_seed(0)  # the loop's view generator is a CPU one

    def pick(c2w):
        return pick_training_views(c2w, tc, rng)

    rec["view_choice_device_cameras"] = attempt(lambda: pick(raw["c2w"]))[1]
    idx = pick(raw["c2w"].cpu())  # go on past a failure there
    batch, rec["view_batch"] = attempt(lambda: view_batch(cfg, raw, dev, idx))

    model, optimizer, params = trainer(cfg, dev)
    dtypes: dict[str, str] = {}

    def record_dtype(key: str):
        def hook(module, inputs, out) -> None:  # None: the output stays as it is
            dtypes.setdefault(key, str(out.dtype))

        return hook

    model.head.register_forward_hook(record_dtype("head_output_dtype"))
    model.blocks[-1].register_forward_hook(record_dtype("last_block_output_dtype"))
    rec["train_step"] = attempt(lambda: train_step(model, optimizer, params, batch, cfg, 0, lpips_net))[1]
    rec.update(dtypes)

    # Breaker 2: AdamW state saved on the CPU, resumed in the old order (state loaded, then the model moved)
    # and in the loop's (model moved, optimizer built, state loaded).
    src, src_opt, src_params = trainer(cfg, torch.device("cpu"))
    for p in src_params:
        p.grad = 1e-3 * torch.randn_like(p)
    src_opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, model=src, optimizer=src_opt, step=1, cfg=cfg)
        payload = load_checkpoint(tmp)

    def resume(loop_order: bool) -> list[str]:
        m = GSLRM(cfg.model)
        m.load_state_dict(payload["model"])
        if loop_order:
            m.to(dev)
        opt = build_optimizer(m, tc)
        opt.load_state_dict(payload["optimizer"])
        if not loop_order:
            m.to(dev)
        devices = sorted({str(v.device) for s in opt.state.values() for k, v in s.items() if k != "step"})
        train_step(m, opt, [p for p in m.parameters() if p.requires_grad], batch, cfg, 0, lpips_net)
        return devices

    rec["b2_old_order"] = attempt(lambda: resume(loop_order=False))[1]
    rec["b2_loop_order_state_devices"], rec["b2_loop_order"] = attempt(lambda: resume(loop_order=True))
    checks = ("view_choice_device_cameras", "view_batch", "train_step", "b2_loop_order")
    rec["ok"] = all(rec[k] == "ok" for k in checks) and (ctx.dry or rec.get("head_output_dtype") == "torch.float32")
    rec["headline"] = (", ".join(f"{k} {'ok' if rec[k] == 'ok' else 'FAILED'}" for k in checks)
                       + f", head {rec.get('head_output_dtype')}")
    return rec


@step(estimate_s=15, limit_s=90)
def flash_attention(ctx: Context) -> dict:
    """Which attention kernels the model's forward and backward run (torch.profiler): flash on CUDA in bf16?"""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from zv_ray.model import GSLRM

    dev = ctx.device
    cfg = ctx.config("configs/paper.yaml", ("model.depth=2", "train.batch_size_per_worker=1", *GSLRM_VIEWS),
                     ("train.resolution=32", "render.resolution=64"))
    model = GSLRM(cfg.model).to(dev)
    batch = view_batch(cfg, ray_batch(cfg, dev), dev)

    def forward_backward() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):  # as predict_and_render
            g = model(batch.input_images, batch.input_intrinsics, batch.input_c2w)
        (g.means.sum() + g.colors.sum()).backward()
        ctx.sync()

    forward_backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        forward_backward()
    events = prof.events()
    kernels = sorted({e.name for e in events if e.device_type == DeviceType.CUDA})
    ops = sorted({e.name for e in events if e.device_type == DeviceType.CPU and "scaled_dot_product" in e.name})
    top = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CUDA), key=lambda e: -e.self_device_time_total)
    flash = [k[:200] for k in kernels if "flash" in k.lower()]
    return {
        "tokens": batch.input_images.shape[1] * (cfg.train.resolution // cfg.model.patch_size) ** 2,
        "head_dim": cfg.model.width // cfg.model.num_heads,
        "flash_kernels": flash[:8],
        "sdpa_ops": ops,
        "top_kernels_by_time": [f"{e.key[:120]}: {e.self_device_time_total / 1e3:.2f} ms" for e in top[:8]],
        "ok": ctx.dry or bool(flash),
        "headline": f"flash kernels: {len(flash)}; ops: {', '.join(ops)}",
    }


@step(estimate_s=15, limit_s=90)
def ddp_nccl(ctx: Context) -> dict:
    """One-rank torch.distributed (NCCL; gloo in the dry run) with the model in DDP: two loop steps and an all_reduce."""
    import socket

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from zv_ray.train.step import train_step

    dev = ctx.device
    backend = "gloo" if ctx.dry else "nccl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        cfg = ctx.config("configs/tiny.yaml", ("model.bf16=true", f"model.rasterizer={ctx.rasterizer()}"))
        wrap = lambda m: DistributedDataParallel(m, device_ids=[0] if dev.type == "cuda" else None)  # noqa: E731
        model, optimizer, params = trainer(cfg, dev, wrap)
        raw = ray_batch(cfg, dev)
        times, norms = [], []
        for i in range(2):
            start = time.perf_counter()
            result = train_step(model, optimizer, params, view_batch(cfg, raw, dev), cfg, i, None)
            ctx.sync()
            times.append(round(time.perf_counter() - start, 4))
            norms.append(result.outcome.grad_norm)
        probe = torch.full((4,), 2.0, device=dev)
        dist.all_reduce(probe)
        rec = {"backend": backend, "nccl": ".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else None,
               "rasterizer": cfg.model.rasterizer, "step_s": times, "grad_norms": norms,
               "all_reduce_ok": bool((probe == 2.0).all())}
    finally:
        dist.destroy_process_group()
    rec["ok"] = rec["all_reduce_ok"] and all(math.isfinite(n) for n in norms)
    rec["headline"] = f"{backend} {rec['nccl'] or ''}: steps {times} s, all_reduce {'ok' if rec['all_reduce_ok'] else 'WRONG'}"
    return rec


@step(estimate_s=45, limit_s=150)
def egl_render(ctx: Context) -> dict:
    """pyrender on EGL: the GL renderer string and views/s for paper-size Zeroverse objects (32 views at 512 and 256)."""
    import numpy as np

    from zv_ray.render.cameras import sample_cameras
    from zv_ray.render.renderer import Renderer
    from zv_ray.zeroverse import generate_object

    cfg = ctx.config("configs/paper.yaml", toy=("zeroverse.mesh_resolution=16", "render.resolution=64"))
    count = 1 if ctx.dry else 2
    start = time.perf_counter()
    objects = [generate_object(cfg.seed, i, cfg.zeroverse) for i in range(count)]
    rec: dict[str, Any] = {"objects": count, "generate_s_per_object": round((time.perf_counter() - start) / count, 2),
                           "faces": [o.stats["num_faces"] for o in objects], "views": cfg.render.num_views}
    resolutions = (cfg.render.resolution,) if ctx.dry else (512, 256)
    for res in resolutions:
        intrinsics, c2w = sample_cameras(np.random.default_rng(0), cfg.render.model_copy(update={"resolution": res}))
        with Renderer(res, backend="egl") as renderer:
            renderer.render(objects[0].scene, intrinsics[:1], c2w[:1])  # context, shaders, first upload
            if "gl_renderer" not in rec:
                from OpenGL.GL import GL_RENDERER, GL_VERSION, glGetString

                rec["gl_renderer"] = glGetString(GL_RENDERER).decode()
                rec["gl_version"] = glGetString(GL_VERSION).decode()
            start = time.perf_counter()
            for obj in objects:
                renderer.render(obj.scene, intrinsics, c2w)
            seconds = time.perf_counter() - start
        rec[f"views_per_s_{res}"] = round(count * len(c2w) / seconds, 1)
    rec["headline"] = f"{rec['gl_renderer']}: " + ", ".join(f"{rec[f'views_per_s_{r}']} views/s at {r}" for r in resolutions)
    return rec


@step(estimate_s=180, limit_s=330, cuda_only=True)
def gsplat_compile(ctx: Context) -> dict:
    """gsplat's JIT build through the node setup step (python -m zv_ray.splat.backend), then a cached load."""
    runs = []
    for _ in range(2):  # first: the compile; second: what every later process pays
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "zv_ray.splat.backend"], cwd=REPO, capture_output=True, text=True,
                              timeout=STEPS["gsplat_compile"].limit_s - 20)
        runs.append((time.perf_counter() - start, proc))
        if proc.returncode:
            break
    (compile_s, first), ok = runs[0], runs[-1][1].returncode == 0
    ctx.share(gsplat="ok" if ok else (first.stdout + first.stderr).strip()[-300:])
    return {
        "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "MAX_JOBS": os.environ.get("MAX_JOBS"),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR"),
        "compile_s": round(compile_s, 1),
        "cached_load_s": round(runs[1][0], 1) if len(runs) > 1 else None,
        "output_tail": (first.stdout + first.stderr).strip().splitlines()[-12:],
        "ok": ok,
        "headline": f"built in {compile_s:.0f} s" + (f", cached load {runs[1][0]:.1f} s" if len(runs) > 1 else ": FAILED"),
    }


@step(estimate_s=40, limit_s=150)
def gsplat_agreement(ctx: Context) -> dict:
    """tests/test_splat_gsplat.py: gsplat and the torch rasterizer agree (values and gradients) on CUDA."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_splat_gsplat.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=STEPS["gsplat_agreement"].limit_s - 10)
    lines = proc.stdout.strip().splitlines()
    return {
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else proc.stderr[-300:],
        "relative_errors": [line.strip() for line in lines if "relative errors" in line],
        "failures": [line for line in lines if line.startswith(("FAILED", "ERROR", "E "))][:20],
        # Without CUDA the module skips itself (pytest exit code 5: nothing ran), which the dry run expects.
        "ok": proc.returncode == 0 or (ctx.dry and proc.returncode == 5),
        "headline": lines[-1] if lines else "no output",
    }


@step(estimate_s=75, limit_s=200)
def paper_256(ctx: Context) -> dict:
    """Paper stage 1 on one GPU: B=8, 4+4 views, 256 px from 512 px renders, bf16, LPIPS on; with and
    without gradient checkpointing."""
    import torch

    rec: dict[str, Any] = {}
    warmup, timed = (1, 1) if ctx.dry else (2, 6)
    for ckpt in (False, True):
        cfg = ctx.config("configs/paper.yaml",
                         (f"model.grad_checkpoint={str(ckpt).lower()}", f"model.rasterizer={ctx.rasterizer()}",
                          "train.skip_grad_norm=null", *GSLRM_VIEWS),  # every timed step applies its update
                         ("train.resolution=32", "render.resolution=64"))
        try:
            rec[f"grad_checkpoint_{ckpt}"] = training_figures(ctx, cfg, warmup, timed)
        except torch.cuda.OutOfMemoryError as err:
            rec[f"grad_checkpoint_{ckpt}"] = {"error": f"out of memory: {str(err)[:300]}"}
        free_device_memory(ctx)
    rec["headline"] = "; ".join(
        f"ckpt {c}: " + (r["error"][:60] if "error" in r else f"{r['step_s_median']} s/step, {r['peak_memory_gib']} GiB, MFU {r['mfu']}")
        for c, r in ((c, rec[f"grad_checkpoint_{c}"]) for c in (False, True)))
    return rec


@step(estimate_s=40, limit_s=180)
def tile_intersections(ctx: Context) -> dict:
    """gsplat's tile-intersection count at step 0 and at saturated scales (every scale at the activation's
    maximum, opacity 0.99), for the 256 and 512 stages: against int32 (gsplat's index type) per batched call,
    per scene and per camera. Counted from the torch projection (gsplat's radii rule) everywhere; measured
    by gsplat where it is built, at the coarsest split whose count fits int32 and half the free memory."""
    import torch

    from zv_ray.model import GSLRM
    from zv_ray.splat.gaussians import Gaussians
    from zv_ray.splat.rasterize import GSPLAT_TILE, tile_intersections

    dev = ctx.device
    stages = (("256", "configs/paper.yaml", ("train.resolution=32", "render.resolution=64")),
              ("512", "configs/paper_512.yaml", ("train.resolution=64", "render.resolution=64")))
    rasterization = _gsplat_or_none(ctx)
    rec: dict[str, Any] = {"tile_size": GSPLAT_TILE, "gsplat_measured": rasterization is not None}
    for name, path, toy in stages:
        cfg = ctx.config(path, GSLRM_VIEWS, toy)
        torch.manual_seed(cfg.seed)
        with torch.device(dev):
            model = GSLRM(cfg.model)
        batch = view_batch(cfg, ray_batch(cfg, dev), dev)
        with torch.no_grad():
            g = model(batch.input_images, batch.input_intrinsics, batch.input_c2w)
        del model
        saturated = Gaussians(means=g.means, scales=torch.full_like(g.scales, math.exp(cfg.model.scale_max_log)),
                              quats=g.quats, opacities=torch.full_like(g.opacities, 0.99), colors=g.colors)
        res = cfg.train.resolution
        for state, gaussians in (("step0", g), ("saturated", saturated)):
            counts = tile_intersections(gaussians, batch.intrinsics, batch.c2w, res, res)  # [B, C]
            figures = {"gaussians_per_scene": gaussians.num, "cameras": counts.shape[1], "batch": counts.shape[0],
                       "total": int(counts.sum()), "per_scene_max": int(counts.sum(1).max()), "per_camera_max": int(counts.max()),
                       "total_over_int32": sig(int(counts.sum()) / INT32_MAX, 3)}
            if rasterization is not None:
                figures.update(_gsplat_isects(rasterization, gaussians, batch.intrinsics, batch.c2w, res, counts))
            rec[f"{name}_{state}"] = figures
        free_device_memory(ctx)
    rec["headline"] = ", ".join(f"{k} {v['total_over_int32']}x int32" for k, v in rec.items() if isinstance(v, dict))
    return rec


def _gsplat_or_none(ctx: Context):
    if ctx.rasterizer() != "auto" or ctx.dry:
        return None
    from zv_ray.splat.backend import load_gsplat

    return load_gsplat()


def _gsplat_isects(rasterization, g, intrinsics, c2w, res: int, counts) -> dict:
    """Forward gsplat at the coarsest split (batch, scene or camera) that fits int32 and half the free memory."""
    import torch

    from zv_ray.splat.rasterize import c2w_to_viewmat, intrinsics_to_K

    free = torch.cuda.mem_get_info()[0]
    fits = lambda n: n < 0.9 * INT32_MAX and 32 * n < free / 2  # noqa: E731 - int64 keys + int32 ids, sort buffers
    B, C = counts.shape
    if fits(int(counts.sum())):
        splits = [(slice(0, B), slice(0, C))]
    elif fits(int(counts.sum(1).max())):
        splits = [(slice(b, b + 1), slice(0, C)) for b in range(B)]
    elif fits(int(counts.max())):
        splits = [(slice(b, b + 1), slice(c, c + 1)) for b in range(B) for c in range(C)]
    else:
        return {"gsplat": "not run: one camera's count does not fit int32 or memory"}
    viewmats, Ks = c2w_to_viewmat(c2w.float()), intrinsics_to_K(intrinsics.float())
    total = 0
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        for bs, cs in splits:
            _, _, meta = rasterization(g.means[bs], g.quats[bs], g.scales[bs], g.opacities[bs], g.colors[bs],
                                       viewmats[bs, cs], Ks[bs, cs], res, res, sh_degree=None)
            total += int(meta["flatten_ids"].numel())
            del meta
    torch.cuda.synchronize()
    split = "batch" if len(splits) == 1 else ("scene" if splits[0][1] == slice(0, C) else "camera")
    return {"gsplat_split": split, "gsplat_calls": len(splits), "gsplat_total": total,
            "gsplat_over_estimate": sig(total / max(int(counts.sum()), 1)), "gsplat_forward_s": round(time.perf_counter() - start, 3)}


@step(estimate_s=50, limit_s=180)
def paper_512(ctx: Context) -> dict:
    """Paper stage 2 on one GPU: B=2, 4+4 views, 512 px, bf16, gradient checkpointing, LPIPS on."""
    cfg = ctx.config("configs/paper_512.yaml", (f"model.rasterizer={ctx.rasterizer()}", "train.skip_grad_norm=null",
                                                *GSLRM_VIEWS),
                     ("train.resolution=48", "render.resolution=64"))
    rec = training_figures(ctx, cfg, *((1, 1) if ctx.dry else (2, 4)))
    rec["headline"] = f"{rec['step_s_median']} s/step, {rec['peak_memory_gib']} GiB, MFU {rec['mfu']}"
    return rec


# ---------------------------------------------------------------------------------------------- child


def run_child(names: list[str], dry: bool) -> None:
    import torch

    ctx = Context(dry, json.loads(os.environ.get("ZV_GPU_CHECK_SHARED", "{}")))
    deadline = float(os.environ["ZV_GPU_CHECK_DEADLINE"])
    for name in names:
        s = STEPS[name]
        left = deadline - time.time()
        if dry and s.cuda_only:
            emit({"record": {"step": name, "status": "skipped", "reason": "needs CUDA and nvcc: not run in the cpu dry run"}})
            continue
        if left < s.estimate_s:
            emit({"record": {"step": name, "status": "skipped", "reason": f"budget: ~{s.estimate_s:.0f} s needed, {left:.0f} s left"}})
            continue
        emit({"start": name})
        start = time.perf_counter()
        try:
            result, status = s.run(ctx), "ok"
            status = "ok" if result.pop("ok", True) else "failed"
        except Exception as err:  # noqa: BLE001 - recorded; a fresh child takes the remaining steps
            result, status = {"error": f"{type(err).__name__}: {err}"[:2000], "traceback": traceback.format_exc()[-3000:]}, "raised"
        emit({"record": {"step": name, "status": "failed" if status == "raised" else status,
                         "seconds": round(time.perf_counter() - start, 2), **result}})
        free_device_memory(ctx)
        if status == "raised" or (not dry and not _cuda_healthy(torch)):
            sys.exit(3)


def _cuda_healthy(torch) -> bool:
    try:
        torch.cuda.synchronize()
    except RuntimeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- parent


class Report:
    """<out>/gpu_check.json, rewritten whole (temp file + rename) after every record."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.data: dict[str, Any] = {"meta": meta, "steps": []}
        self.write()

    def add(self, record: dict) -> None:
        self.data["steps"].append(record)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def child_env(args: argparse.Namespace, deadline: float, shared: dict) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(PYTHONUNBUFFERED="1", ZV_GPU_CHECK_DEADLINE=str(deadline), ZV_GPU_CHECK_SHARED=json.dumps(shared),
               PYOPENGL_PLATFORM="egl", TORCH_EXTENSIONS_DIR=str(args.build_dir), MAX_JOBS=str(os.cpu_count()))
    env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # Hopper (H100/H200): one architecture compiles fastest
    if NVIDIA_EGL_VENDOR.is_file():  # the driver's EGL lives outside glvnd's default search path there
        env.setdefault("__EGL_VENDOR_LIBRARY_FILENAMES", str(NVIDIA_EGL_VENDOR))
    if args.cpu_dry_run:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_children(args: argparse.Namespace, report: Report, log, deadline: float) -> dict:
    shared: dict[str, Any] = {}
    pending = [n for n in STEPS if not args.only or n in args.only]
    while pending:
        if time.time() > deadline - 5:
            for name in pending:
                report.add({"step": name, "status": "skipped", "reason": "budget: the wall-clock guard ran out"})
            break
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(pending)]
        cmd += ["--cpu-dry-run"] if args.cpu_dry_run else []
        proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(args, deadline, shared), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        done, current, ended = _watch(proc, report, log, shared, deadline)
        if current is not None:
            done.add(current)
        if _status_of(report, "environment") == "failed":
            for name in pending:
                if name not in done:
                    report.add({"step": name, "status": "skipped", "reason": "the environment step failed"})
            break
        if not done:  # the child died before its first step: retrying would fail the same way
            report.add({"step": pending[0], "status": "failed", "error": f"the check's child process did not start a step: {ended}"})
            break
        pending = [n for n in pending if n not in done]
    return shared


def _status_of(report: Report, name: str) -> str | None:
    return next((r["status"] for r in report.data["steps"] if r["step"] == name), None)


def _watch(proc: subprocess.Popen, report: Report, log, shared: dict, deadline: float) -> tuple[set[str], str | None, str]:
    """Relay a child's output until it ends or its step overruns: -> (recorded steps, the step in flight, how it ended)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    done: set[str] = set()
    current, started, step_deadline, buffer, tail, killed = None, 0.0, math.inf, b"", deque(maxlen=20), None
    while True:
        if selector.select(timeout=1.0):
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if not line.startswith(PROTOCOL):
                    print(line, flush=True)
                    log.write(line + "\n")
                    tail.append(line)
                    continue
                message = json.loads(line[len(PROTOCOL):])
                if "start" in message:
                    current, started = message["start"], time.time()
                    step_deadline = min(started + STEPS[current].limit_s, deadline)
                    print(f"--- {current}", flush=True)
                elif "share" in message:
                    shared.update(message["share"])
                else:
                    report.add(message["record"])
                    done.add(message["record"]["step"])
                    current, step_deadline = None, math.inf
        if current is not None and time.time() > step_deadline:
            killed = "over its time limit" if step_deadline < deadline else "stopped by the wall-clock guard"
            os.killpg(proc.pid, signal.SIGKILL)
            break
    code = proc.wait()
    ended = killed or f"exit code {code}"
    if current is not None:
        report.add({"step": current, "status": "failed", "seconds": round(time.time() - started, 2),
                    "error": f"the step never reported: {ended}", "log_tail": list(tail)})
    return done, current, ended


def summary(report: Report) -> str:
    rows = [f"{'step':<20} {'status':<8} {'seconds':>8}  result"]
    for r in report.data["steps"]:
        what = r.get("headline") or r.get("reason") or r.get("error", "")
        rows.append(f"{r['step']:<20} {r['status']:<8} {r.get('seconds', ''):>8}  {str(what)[:150]}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "outputs" / "gpu_check")),
                        help="folder for gpu_check.json and gpu_check.log (default $OUT)")
    parser.add_argument("--budget", type=float, default=480, help="wall-clock seconds for all steps")
    parser.add_argument("--only", type=lambda s: s.split(","), help=f"comma-separated steps of: {', '.join(STEPS)}")
    parser.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU; CUDA-only steps are skipped")
    parser.add_argument("--build-dir", type=Path, default=Path(tempfile.gettempdir()) / "zv-gpu-check-torch-extensions",
                        help="TORCH_EXTENSIONS_DIR for gsplat's JIT build")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child.split(","), args.cpu_dry_run)
        return
    unknown = sorted(set(args.only or ()) - set(STEPS))
    if unknown:
        parser.error(f"--only: unknown steps {unknown}; choose from {', '.join(STEPS)}")

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = Report(args.out / "gpu_check.json", {"dry_run": args.cpu_dry_run, "budget_s": args.budget, "argv": sys.argv[1:],
                                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with open(args.out / "gpu_check.log", "a") as log:
        shared = run_children(args, report, log, started + args.budget)
    report.data["meta"].update(card=shared.get("card", "cpu"), shared=shared, wall_s=round(time.time() - started, 1))
    report.write()
    print(summary(report))
    print(f"records: {report.path}")


if __name__ == "__main__":
    main()
