"""The GPU check (issues 12 and 24): one prepared run on a lent GPU that measures what the CPU suite cannot.

    # on the device machine, as one `run` call (docs/gpu_check.md: the exact command, its carry list and timeout)
    python3 scripts/gpu_check.py --out $OUT --budget 420
    # here: the same steps at toy sizes on the CPU, to prove the plumbing and the plan
    .venv/bin/python scripts/gpu_check.py --cpu-dry-run --out outputs/gpu_check
    # some steps again, on the still-warm machine (the run ends by printing this line for what failed or was skipped)
    python3 scripts/gpu_check.py --out $OUT --budget 330 --only paper_512,egl_render

gsplat's JIT build starts in the background at second 0 (its whole output in <out>/gsplat_build.log) while the
steps that need no gsplat use the GPU; the steps that render with gsplat follow the build, and EGL rendering comes
last. If gsplat 1.5.3 does not build, the carried 1.6 fallback (.whl/fallback/) is built in turn; if neither does,
the gsplat steps are skipped with the reason and `model_alone` has still timed the model's forward and backward.

Each step appends its record to <out>/gpu_check.json as soon as it ends, so a run cut short keeps what it
measured; <out>/gpu_check.log holds the output. The steps run in a child process that this one watches (it
imports no torch): a step past its limit is killed, and after a step that raised or crashed a fresh child takes
the remaining ones, since a failed CUDA step can leave its context unusable. A step that would not fit the
wall-clock budget is skipped and says so. Ray does not run there: batches are built by the loop's own functions
and handed over as Ray Train's iter_torch_batches hands them to a GPU worker, already on the device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import shlex
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
FALLBACK_WHEELS = REPO / ".whl" / "fallback"  # gpu_check_prepare.sh: gsplat 1.6, tried if 1.5.3 does not build
DEFAULT_BUILD_DIR = Path(tempfile.gettempdir()) / "zv-gpu-check-torch-extensions"
# Toy sizes for --cpu-dry-run (the TINY model, one object, 12 rendered views).
TOY = ("model.width=128", "model.depth=4", "model.num_heads=4", "train.micro_batch_size=1", "render.num_views=12")
TOY_RES = {"256": ("train.resolution=32", "render.resolution=64"), "512": ("train.resolution=48", "render.resolution=64")}
# Gaussians about a pixel wide at 256 px (scale e^-5 ~ 0.007 at camera distances ~2): the low end of the
# rasterizer's cost, where a trained model's are; the initial ones (e^-2.3 ~ 0.1) are the high end.
SMALL_GAUSSIANS = ("model.scale_bias=-5.0",)
DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16, NVIDIA's datasheet
# Plan: guesses for an H200 with 16 cores, before any run; the records hold what each took.
BUILD_ESTIMATE_S, BUILD_LIMIT_S = 180, 330  # gsplat's JIT build for the card's one architecture
CHILD_START_S = 5  # a child process importing torch and starting CUDA
MIN_MARGIN_S = 60  # the plan must leave this much of --budget unused


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[["Context"], dict]
    estimate_s: float  # typical seconds on an H200: a step is skipped when less than this is left
    limit_s: float  # killed past this
    needs_gsplat: bool  # runs after the build; on the GPU, skipped when gsplat did not build
    after_build: bool  # runs after the build (gsplat steps, and EGL rendering last)


STEPS: dict[str, Step] = {}  # in run order


def step(estimate_s: float, limit_s: float, needs_gsplat: bool = False, after_build: bool = False):
    def register(fn: Callable[["Context"], dict]) -> Callable[["Context"], dict]:
        STEPS[fn.__name__] = Step(fn.__name__, fn, estimate_s, limit_s, needs_gsplat, needs_gsplat or after_build)
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
        if not dry:  # as setup_worker sets them on a GPU
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
        """gsplat once the background build made it; before that (or when it failed) the torch rasterizer, so no
        step starts a compile of its own."""
        return "auto" if self.shared.get("gsplat") == "ok" else "torch"

    def gsplat(self) -> str | None:
        """The gsplat version the step's figures were made with; None for the torch rasterizer."""
        return self.shared.get("gsplat_version") if self.rasterizer() == "auto" else None


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


def stream_batch(cfg, resolution: int | None = None, seed: int = 0) -> dict:
    """One micro-batch (train.micro_batch_size samples: what one GPU puts through the model at once) as the feed
    hands it to a train worker (the loop's view_batch moves it to the device): samples made by the
    stream's own rule (records.stored_samples: the views sample_picks chooses from each object's camera pool) of
    random pixels at `resolution` (default train.resolution, where the online stream renders), made on the CPU."""
    import numpy as np
    import torch

    from zv_ray.data.records import SAMPLE_COLUMNS, object_cameras, stored_samples

    res, b = resolution or cfg.train.resolution, cfg.train.micro_batch_size
    rng = np.random.default_rng(seed)
    samples: list[dict] = []
    while sum(len(s["object_id"]) for s in samples) < b:
        object_id = len(samples)
        intrinsics, c2w = object_cameras(cfg.seed, object_id, cfg.render)
        record = {"object_id": object_id, "rgba": rng.integers(0, 256, (len(c2w), res, res, 4), dtype=np.uint8),
                  "intrinsics": intrinsics * (res / cfg.render.resolution), "c2w": c2w}
        samples.append(stored_samples(record, cfg, view_pass=0))
    return {k: torch.from_numpy(np.concatenate([s[k] for s in samples])[:b]) for k in SAMPLE_COLUMNS}


def model_batch(cfg, raw: dict, device):
    """The loop's view_batch (zv_ray.train.worker): the stream's batch as the model's, at train.resolution."""
    from zv_ray.train.worker import Worker, view_batch

    return view_batch(Worker(cfg, rank=0, world=1, device=device), raw)


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


def reset_memory(ctx: Context) -> None:
    import torch

    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def figures(ctx: Context, cfg, step_s: float) -> dict:
    """Throughput, MFU against the measured bf16 peak and the datasheet's, and peak memory since reset_memory.
    MFU counts the model's FLOPs only (forward + backward; no rasterization, LPIPS or checkpoint recompute)."""
    import torch

    from zv_ray.model import flops_per_step

    tc = cfg.train
    achieved = flops_per_step(cfg.model, tc.micro_batch_size, tc.num_input_views, tc.resolution) / step_s / 1e12
    peak = ctx.shared.get("peak_tflops")
    cuda = ctx.device.type == "cuda"
    return {
        "step_s_median": round(step_s, 4),
        "samples_per_s": round(tc.micro_batch_size / step_s, 2),
        "achieved_tflops": sig(achieved),
        "mfu_vs_measured_peak": sig(achieved / peak, 3) if peak else None,
        "mfu_vs_datasheet_989": sig(achieved / DATASHEET_TFLOPS, 3),
        "memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "memory_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
    }


def training_figures(ctx: Context, cfg, timed: int) -> dict:
    """The loop's step on one worker (view_batch + train_step, the perceptual loss with random weights) at the
    loop's step numbers: warm-ups at its first step (lr warm-up, no perceptual loss) and its first steady one
    (past both), then `timed` steady steps, each with its time and gsplat's tile intersections; one more step
    split into its parts."""
    from zv_ray.model import num_params
    from zv_ray.train.step import train_step

    dev, tc = ctx.device, cfg.train
    model, optimizer, params = trainer(cfg, dev)
    perceptual = random_lpips(dev) if cfg.loss.perceptual_weight > 0 else None
    raw = stream_batch(cfg)
    steady = max(tc.warmup_steps, cfg.loss.perceptual_start_step)
    reset_memory(ctx)
    records = []
    for n in (0, *range(steady, steady + 1 + timed)):
        ctx.sync()
        start = time.perf_counter()
        result = train_step(model, optimizer, params, model_batch(cfg, raw, dev), cfg, n, perceptual)
        ctx.sync()
        records.append({"step": n, "seconds": round(time.perf_counter() - start, 4), "lr": sig(result.lr),
                        "perceptual": perceptual is not None and n >= cfg.loss.perceptual_start_step,
                        "tile_intersections": result.tile_intersections, "grad_norm": round(result.outcome.grad_norm, 4)})
    warm, steps = records[:2], records[2:]
    rec = {"params_m": round(num_params(model) / 1e6, 1), "batch": tc.micro_batch_size, "resolution": tc.resolution,
           "views": f"{tc.num_input_views}+{tc.num_target_views}", "bf16": cfg.model.bf16,
           "grad_checkpoint": cfg.model.grad_checkpoint, "scale_bias": cfg.model.scale_bias,
           "rasterizer": cfg.model.rasterizer, "gsplat": ctx.gsplat(),
           "perceptual": "lpips, random VGG (timing only)" if perceptual is not None else "off",
           **figures(ctx, cfg, statistics.median(s["seconds"] for s in steps)),
           "tile_intersections_max": max((s["tile_intersections"] or 0 for s in steps), default=0) or None,
           "timed_steps": steps, "warmup_steps": warm}

    parts: dict[str, float] = {}
    clock = [time.perf_counter()]

    def mark(name: str) -> None:
        ctx.sync()
        now = time.perf_counter()
        parts[name] = round(now - clock[0], 4)
        clock[0] = now

    batch = model_batch(cfg, raw, dev)
    mark("view_batch")
    train_step(model, optimizer, params, batch, cfg, steady + timed + 1, perceptual, mark=mark)
    rec["parts_s (one synchronized step)"] = parts
    return rec


def paper_stage(ctx: Context, path: str, stage: str, timed: int) -> dict:
    """A paper stage's loop step with the model's initial Gaussians and with small ones: the two bracket the
    steady state's rasterization cost."""
    import torch

    rec: dict[str, Any] = {}
    for variant, overrides in (("initial_gaussians", ()), ("small_gaussians", SMALL_GAUSSIANS)):
        # skip_grad_norm: every timed step applies its update, as a healthy run's do.
        cfg = ctx.config(path, (f"model.rasterizer={ctx.rasterizer()}", "train.skip_grad_norm=null", *overrides),
                         TOY_RES[stage])
        try:
            rec[variant] = training_figures(ctx, cfg, 1 if ctx.dry else timed)
        except torch.cuda.OutOfMemoryError as err:
            rec[variant] = {"error": f"out of memory: {str(err)[:300]}"}
        free_device_memory(ctx)
    rec["headline"] = f"gsplat {ctx.gsplat()}; " + "; ".join(
        f"{v.split('_')[0]}: " + (r["error"][:60] if "error" in r else
                                  f"{r['step_s_median']} s/step, MFU {r['mfu_vs_measured_peak']} "
                                  f"({r['mfu_vs_datasheet_989']} of 989), {r['memory_reserved_gib']} GiB, "
                                  f"{r['tile_intersections_max']} isects")
        for v, r in rec.items())
    return rec


def free_device_memory(ctx: Context) -> None:
    import gc

    import torch

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def _run(cmd: list[str]) -> str | None:
    """A tool's first output line, or None where it is missing or fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if proc.returncode == 0 and lines else None


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- steps


@step(estimate_s=8, limit_s=60)
def environment(ctx: Context) -> dict:
    """What gsplat's build and the GL steps depend on: Python (and Python.h), torch and its CUDA, CUDA_HOME, nvcc
    and the C++ compiler, the arch list against the card, the X11 and GL client libraries, the NVIDIA EGL vendor
    file; the card; the packages the check carries."""
    import ctypes
    import platform
    import shutil
    import sysconfig

    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    from zv_ray.splat.backend import cuda_compiler_problem, find_nvcc, gsplat_problem, nvcc_release

    if not ctx.dry and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here: on a CPU machine run with --cpu-dry-run")
    nvcc = find_nvcc(CUDA_HOME)
    python_h = Path(sysconfig.get_paths()["include"], "Python.h")

    def loads(lib: str) -> str:
        return attempt(lambda: ctypes.CDLL(lib))[1]

    rec: dict[str, Any] = {
        "python": platform.python_version(),
        "python_h": f"{python_h} {'present' if python_h.is_file() else 'MISSING'}",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_home": CUDA_HOME,
        "nvcc": nvcc,
        "nvcc_release": nvcc and nvcc_release(nvcc),
        "nvcc_problem": cuda_compiler_problem(torch.version.cuda, nvcc),
        "cxx": {c: _run([shutil.which(c) or c, "--version"]) for c in (os.environ.get("CXX", "c++"), "g++")},
        "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "max_jobs": os.environ.get("MAX_JOBS"),
        "gsplat": _version("gsplat"),
        "gsplat_problem": gsplat_problem(),
        # glvnd's libGLX (behind pyrender's libGL) needs the X11 client libraries even without a display.
        "gl_libraries": {lib: loads(lib) for lib in ("libX11.so.6", "libxcb.so.1", "libXext.so.6", "libXrender.so.1",
                                                     "libGLX.so.0", "libGL.so.1", "libEGL.so.1", "libOpenGL.so.0")},
        "nvidia_egl_vendor_file": str(NVIDIA_EGL_VENDOR) if NVIDIA_EGL_VENDOR.is_file() else "MISSING",
        "egl_vendor_env": os.environ.get("__EGL_VENDOR_LIBRARY_FILENAMES"),
        "cpus": os.cpu_count(),
        "packages": {d: _version(d) for d in ("numpy", "pydantic", "trimesh", "manifold3d", "pyrender", "PyOpenGL", "triton")},
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        capability = f"{props.major}.{props.minor}"
        rec.update(card=props.name, capability=capability, sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                   arch_list_is_the_card=rec["torch_cuda_arch_list"] == capability)
        rec["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm",
                                  "--format=csv,noheader"])
        ctx.share(card=props.name)
    rec["headline"] = (f"{rec.get('card', 'cpu')}, torch {rec['torch']} (CUDA {rec['torch_cuda']}), nvcc "
                       f"{rec['nvcc_release']}, arch {rec['torch_cuda_arch_list']}, gsplat {rec['gsplat']}, "
                       f"libX11 {rec['gl_libraries']['libX11.so.6'][:20]}")
    return rec


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
    return {"n": n, "dtype": str(dtype), "tflops_median": sig(tflops), "tflops_best": sig(2 * n**3 / min(times) / 1e12),
            "of_datasheet_989": sig(tflops / DATASHEET_TFLOPS, 3), "headline": f"{tflops:.3g} TFLOP/s {dtype}"}


@step(estimate_s=20, limit_s=120)
def breakers(ctx: Context) -> dict:
    """Issue 12 breakers 1, 2 and 11 on a batch already on the device: the old code's failure and the loop's path."""
    import torch

    from zv_ray.inference.views import pick_training_views
    from zv_ray.model import GSLRM
    from zv_ray.model.checkpoint import load_checkpoint, save_checkpoint
    from zv_ray.train.step import build_optimizer, train_step

    dev = ctx.device
    cfg = ctx.config("configs/tiny.yaml", ("model.bf16=true", f"model.rasterizer={ctx.rasterizer()}", "loss.perceptual_weight=0.2"))
    tc = cfg.train
    # Stored at 64 px (a Parquet stream), trained at 32 px: the resize that scales the intrinsics (breaker 1).
    raw = stream_batch(cfg, cfg.render.resolution)
    lpips_net = random_lpips(dev)
    rec: dict[str, Any] = {"stream_resolution": cfg.render.resolution, "train_resolution": tc.resolution,
                           "rasterizer": cfg.model.rasterizer}

    # Breaker 1 as it was: a CPU scale vector multiplied into the device intrinsics.
    on_device = {k: v.to(dev) for k, v in raw.items()}
    rec["b1_old_cpu_scale"] = attempt(lambda: on_device["intrinsics"] * torch.tensor([0.5, 0.5, 0.5, 0.5]))[1]
    rng = torch.Generator().manual_seed(0)  # the views' generator is a CPU one
    rec["view_choice_device_cameras"] = attempt(lambda: pick_training_views(on_device["c2w"], tc, rng))[1]
    batch, rec["view_batch"] = attempt(lambda: model_batch(cfg, raw, dev))

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
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from zv_ray.inference.predict import predict_gaussians
    from zv_ray.model import GSLRM

    dev = ctx.device
    cfg = ctx.config("configs/paper.yaml", ("model.depth=2", "train.micro_batch_size=1"), TOY_RES["256"])
    model = GSLRM(cfg.model).to(dev)
    batch = model_batch(cfg, stream_batch(cfg), dev)

    def forward_backward() -> None:
        g = predict_gaussians(model, batch, cfg)  # the step's forward: bf16 autocast on CUDA
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
        raw = stream_batch(cfg)
        times, norms = [], []
        for i in range(2):
            start = time.perf_counter()
            result = train_step(model, optimizer, params, model_batch(cfg, raw, dev), cfg, i, None)
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


@step(estimate_s=40, limit_s=150)
def model_alone(ctx: Context) -> dict:
    """The paper model alone: the step's forward (predict_gaussians) and a backward from every Gaussian field, no
    rasterizer and no perceptual loss, at 256 px with and without gradient checkpointing and at 512 px. MFU and
    memory that come back whether or not gsplat builds (it runs beside the build)."""
    import torch

    rec: dict[str, Any] = {"beside_gsplat_build": ctx.shared.get("gsplat_building", False)}
    for stage, path, ckpt in (("256", "configs/paper.yaml", True), ("256", "configs/paper.yaml", False),
                              ("512", "configs/paper_512.yaml", True)):
        cfg = ctx.config(path, (f"model.grad_checkpoint={str(ckpt).lower()}",), TOY_RES[stage])
        key = f"{stage}_grad_checkpoint_{ckpt}"
        try:
            rec[key] = _model_alone_figures(ctx, cfg, *((1, 1) if ctx.dry else (2, 5)))
        except torch.cuda.OutOfMemoryError as err:
            rec[key] = {"error": f"out of memory: {str(err)[:300]}"}
        free_device_memory(ctx)
    rec["headline"] = "; ".join(
        f"{k.replace('_grad_checkpoint_', ' ckpt ')}: " + (v["error"][:50] if "error" in v else
                                                          f"{v['step_s_median']} s, MFU {v['mfu_vs_measured_peak']}, "
                                                          f"{v['memory_reserved_gib']} GiB")
        for k, v in rec.items() if isinstance(v, dict))
    return rec


def _model_alone_figures(ctx: Context, cfg, warmup: int, timed: int) -> dict:
    import torch

    from zv_ray.inference.predict import predict_gaussians
    from zv_ray.model import GSLRM

    torch.manual_seed(cfg.seed)
    with torch.device(ctx.device):
        model = GSLRM(cfg.model)
    batch = model_batch(cfg, stream_batch(cfg), ctx.device)
    reset_memory(ctx)
    times = []
    for i in range(warmup + timed):
        ctx.sync()
        start = time.perf_counter()
        g = predict_gaussians(model, batch, cfg)
        sum(t.square().mean() for t in (g.means, g.scales, g.quats, g.opacities, g.colors)).backward()
        model.zero_grad(set_to_none=True)
        ctx.sync()
        if i >= warmup:
            times.append(round(time.perf_counter() - start, 4))
    return {"batch": cfg.train.micro_batch_size, "resolution": cfg.train.resolution,
            **figures(ctx, cfg, statistics.median(times)), "step_s_all": times}


@step(estimate_s=25, limit_s=150)
def tile_intersections(ctx: Context) -> dict:
    """gsplat's tile-intersection count (the library's tile_intersections: the torch projection with gsplat's
    rule, no gsplat needed) for the 256 and 512 stages at step 0 and at saturated scales (every scale at the
    activation's maximum, opacity 0.99): per batched call, per scene and per camera, against int32."""
    import torch

    from zv_ray.inference.predict import predict_gaussians
    from zv_ray.model import GSLRM
    from zv_ray.splat.gaussians import Gaussians
    from zv_ray.splat.rasterize import GSPLAT_TILE, INT32_MAX, tile_intersections

    dev = ctx.device
    rec: dict[str, Any] = {"tile_size": GSPLAT_TILE}
    for stage, path in (("256", "configs/paper.yaml"), ("512", "configs/paper_512.yaml")):
        cfg = ctx.config(path, (), TOY_RES[stage])
        torch.manual_seed(cfg.seed)
        with torch.device(dev):
            model = GSLRM(cfg.model)
        batch = model_batch(cfg, stream_batch(cfg), dev)
        with torch.no_grad():
            g = predict_gaussians(model, batch, cfg)
        del model
        saturated = Gaussians(means=g.means, scales=torch.full_like(g.scales, math.exp(cfg.model.scale_max_log)),
                              quats=g.quats, opacities=torch.full_like(g.opacities, 0.99), colors=g.colors)
        res = cfg.train.resolution
        for state, gaussians in (("step0", g), ("saturated", saturated)):
            counts = tile_intersections(gaussians, batch.intrinsics, batch.c2w, res, res)  # [B, C]
            rec[f"{stage}_{state}"] = {
                "gaussians_per_scene": gaussians.num, "cameras": counts.shape[1], "batch": counts.shape[0],
                "total": int(counts.sum()), "per_scene_max": int(counts.sum(1).max()), "per_camera_max": int(counts.max()),
                "total_over_int32": sig(int(counts.sum()) / INT32_MAX, 3)}
        free_device_memory(ctx)
    rec["headline"] = ", ".join(f"{k} {v['total_over_int32']}x int32" for k, v in rec.items() if isinstance(v, dict))
    return rec


@step(estimate_s=25, limit_s=120, needs_gsplat=True)
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
        "headline": f"gsplat {ctx.gsplat()}: " + (lines[-1] if lines else "no output"),
    }


@step(estimate_s=50, limit_s=200, needs_gsplat=True)
def paper_256(ctx: Context) -> dict:
    """Paper stage 1 on one GPU (configs/paper.yaml: a micro-batch of 8, 8+4 views at 256 px, bf16, gradient checkpointing,
    LPIPS), initial and small Gaussians."""
    return paper_stage(ctx, "configs/paper.yaml", "256", timed=5)


@step(estimate_s=45, limit_s=180, needs_gsplat=True)
def paper_512(ctx: Context) -> dict:
    """Paper stage 2 on one GPU (configs/paper_512.yaml: a micro-batch of 2, 8+4 views at 512 px), initial and small Gaussians."""
    return paper_stage(ctx, "configs/paper_512.yaml", "512", timed=4)


@step(estimate_s=35, limit_s=150, after_build=True)
def egl_render(ctx: Context) -> dict:
    """pyrender on EGL, last (a broken GL stack can take the process down): the GL renderer string and views/s
    for paper-size Zeroverse objects (32 views at 512 and 256, read back to host memory)."""
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


# ---------------------------------------------------------------------------------------------- child


def run_child(names: list[str], dry: bool) -> None:
    import torch

    ctx = Context(dry, json.loads(os.environ.get("ZV_GPU_CHECK_SHARED", "{}")))
    deadline = float(os.environ["ZV_GPU_CHECK_DEADLINE"])
    for name in names:
        s = STEPS[name]
        left = deadline - time.time()
        if s.needs_gsplat and not dry and ctx.rasterizer() != "auto":
            why = ctx.shared.get("gsplat", "not built")
            emit({"record": {"step": name, "status": "skipped", "reason": f"gsplat did not build ({why}); model_alone "
                             "has the model's MFU and memory without it"}})
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
                         "seconds": round(time.perf_counter() - start, 2),
                         "gsplat": ctx.gsplat() if s.needs_gsplat else None, **result}})
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

    def status(self, name: str) -> str | None:
        return next((r["status"] for r in self.data["steps"] if r["step"] == name), None)


def plan(names: list[str], budget: float) -> dict:
    """The run's schedule from the estimates: the build beside the steps that need no gsplat, then the rest."""
    beside = [n for n in names if not STEPS[n].after_build]
    after = [n for n in names if STEPS[n].after_build]
    build = BUILD_ESTIMATE_S if any(STEPS[n].needs_gsplat for n in names) else 0
    beside_s = CHILD_START_S + sum(STEPS[n].estimate_s for n in beside) if beside else 0
    after_s = CHILD_START_S + sum(STEPS[n].estimate_s for n in after) if after else 0
    total = max(build, beside_s) + after_s
    return {"build_s": build, "beside_build_s": beside_s, "after_build_s": after_s, "total_s": total,
            "budget_s": budget, "margin_s": budget - total}


def describe(p: dict) -> str:
    return (f"plan: gsplat build ~{p['build_s']} s in the background beside ~{p['beside_build_s']} s of steps, then "
            f"~{p['after_build_s']} s after it: ~{p['total_s']} s of the {p['budget_s']:.0f} s budget, "
            f"margin {p['margin_s']:.0f} s")


def card_arch() -> str | None:
    """The first GPU's compute capability from nvidia-smi (e.g. '9.0'), without importing torch."""
    found = _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"])
    return found.strip() if found else None


def child_env(args: argparse.Namespace, deadline: float, arch: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    # The build gets all cores but two: one for the steps beside it, one for this process.
    env.update(PYTHONUNBUFFERED="1", ZV_GPU_CHECK_DEADLINE=str(deadline), PYOPENGL_PLATFORM="egl",
               TORCH_EXTENSIONS_DIR=str(args.build_dir), MAX_JOBS=str(max(1, (os.cpu_count() or 1) - 2)))
    if arch:  # the card's own architecture, whatever the image set: one compiles fastest and runs here
        env["TORCH_CUDA_ARCH_LIST"] = arch
    if NVIDIA_EGL_VENDOR.is_file():  # the driver's EGL lives outside glvnd's default search path there
        env.setdefault("__EGL_VENDOR_LIBRARY_FILENAMES", str(NVIDIA_EGL_VENDOR))
    if args.cpu_dry_run:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


class GsplatBuild:
    """gsplat's JIT build as a background process from second 0: the GPU nodes' setup step
    (`python -m zv_ray.splat.backend`), its whole output (VERBOSE=1: every compiler command) in the log. If it
    fails and a fallback wheel was carried, that gsplat is installed into a folder of its own ahead of the first
    on PYTHONPATH and built in turn, in its own extensions folder. A version that failed here before is not tried
    again by a rerun on the same machine."""

    def __init__(self, env: dict[str, str], log_path: Path, build_dir: Path, fallback_dir: Path, dry: bool):
        self.env, self.log_path, self.build_dir, self.dry = env, log_path, build_dir, dry
        self.attempts: list[dict] = []
        self.overrides: dict[str, str] = {}  # where the gsplat being built lives, for the children after the build
        self.proc: subprocess.Popen | None = None
        self.ok = False
        self.done = False
        primary = _version("gsplat")
        fallbacks = sorted(fallback_dir.glob("gsplat-*.whl"))
        self.queue: list[tuple[str, Path | None]] = ([(primary, None)] if primary else []) + \
            [(w.name.split("-")[1], w) for w in fallbacks[-1:]]
        self.skipped = [v for v, _ in self.queue if self._failed_marker(v).exists()]
        self.queue = [(v, w) for v, w in self.queue if v not in self.skipped]

    def _failed_marker(self, version: str) -> Path:
        return self.build_dir / f"zv-gpu-check-failed-{version}"

    def start(self) -> None:
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self._next()

    def _next(self) -> None:
        if not self.queue:
            self.done = True
            return
        version, wheel = self.queue.pop(0)
        overrides: dict[str, str] = {}
        with open(self.log_path, "a") as log:
            log.write(f"=== gsplat {version}{' (fallback wheel ' + wheel.name + ')' if wheel else ''}: "
                      f"{time.strftime('%H:%M:%S')}\n")
            if wheel is not None:
                site = self.build_dir / f"site-gsplat-{version}"
                install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                          "--no-compile", "--upgrade", "--target", str(site), str(wheel)],
                                         stdout=log, stderr=subprocess.STDOUT, timeout=120)
                if install.returncode:
                    self.attempts.append({"gsplat": version, "status": "failed", "error": "its wheel did not install"})
                    return self._next()
                overrides = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), self.env.get("PYTHONPATH")) if p),
                             "TORCH_EXTENSIONS_DIR": str(self.build_dir / f"gsplat-{version}"),
                             # 1.6 compiles only what is asked for: zv-ray calls the 3DGS rasterizer alone, on
                             # RGB (3 channels; alpha comes apart), so one of its 23 channel counts will do.
                             "BUILD_3DGS": "1", "NUM_CHANNELS": "3"}
            offset = log.tell()
        self.overrides = overrides
        self.attempts.append({"gsplat": version, "env": overrides, "started": time.time(), "log_offset": offset})
        self.output = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "zv_ray.splat.backend"], cwd=REPO,
                                     env={**self.env, **overrides, "VERBOSE": "1"}, stdout=self.output,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self, deadline: float) -> None:
        """Move the build on: note an ended attempt, start the fallback after a failure, stop one past its limit."""
        if self.done or self.proc is None:
            return
        current = self.attempts[-1]
        code = self.proc.poll()
        if code is None:
            over = time.time() - current["started"] > BUILD_LIMIT_S
            if over or time.time() > deadline:
                self.stop("over its limit" if over else "stopped by the wall-clock guard")
            return
        self._ended(code, None)

    def stop(self, why: str) -> None:
        self.queue.clear()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self._ended(self.proc.wait(), why)
        self.done = True

    def _ended(self, code: int, killed: str | None) -> None:
        self.output.close()
        current = self.attempts[-1]
        with open(self.log_path, "rb") as log:
            log.seek(current.pop("log_offset"))
            tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
        current.update(seconds=round(time.time() - current.pop("started"), 1), returncode=code,
                       status="ok" if code == 0 else "failed", log_tail=tail, **({"error": killed} if killed else {}))
        self.proc = None
        if code == 0:
            self.ok, self.done = True, True
            return
        if killed is None and not self.dry:
            self._failed_marker(current["gsplat"]).touch()
        self._next()

    def shared(self) -> dict[str, str]:
        """What the children after the build get: 'ok' and the version, or why not."""
        if self.ok:
            return {"gsplat": "ok", "gsplat_version": self.attempts[-1]["gsplat"]}
        why = "; ".join(f"{a['gsplat']}: {a.get('error') or (a.get('log_tail') or ['exit ' + str(a.get('returncode'))])[-1]}"
                        for a in self.attempts) or "no gsplat installed and no fallback wheel"
        return {"gsplat": why[:600]}

    def record(self) -> dict:
        rec: dict[str, Any] = {"step": "gsplat_build", "attempts": self.attempts, "log": self.log_path.name,
                               "skipped_versions (failed here before)": self.skipped,
                               "TORCH_CUDA_ARCH_LIST": self.env.get("TORCH_CUDA_ARCH_LIST"), "MAX_JOBS": self.env.get("MAX_JOBS")}
        done = [a for a in self.attempts if "seconds" in a]
        if self.ok:
            rec.update(status="ok", seconds=done[-1]["seconds"], headline=f"gsplat {done[-1]['gsplat']} built in "
                       f"{done[-1]['seconds']:.0f} s" + (" (after " + ", ".join(a["gsplat"] for a in done[:-1]) + " failed)"
                                                          if len(done) > 1 else ""))
        elif self.dry:
            rec.update(status="skipped", reason="needs CUDA and nvcc: the cpu dry run ran the build command, which "
                       "stopped as expected: " + self.shared()["gsplat"][:300])
        else:
            rec.update(status="failed", error=self.shared()["gsplat"], headline=self.shared()["gsplat"][:150])
        return rec


def run_children(args: argparse.Namespace, names: list[str], env: dict[str, str], report: Report, log, shared: dict,
                 deadline: float, tick: Callable[[], None]) -> None:
    """Run `names` in child processes, a fresh one after each crash, until all are recorded."""
    pending = list(names)
    while pending:
        if time.time() > deadline - 5:
            for name in pending:
                report.add({"step": name, "status": "skipped", "reason": "budget: the wall-clock guard ran out"})
            return
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(pending)]
        cmd += ["--cpu-dry-run"] if args.cpu_dry_run else []
        proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "ZV_GPU_CHECK_SHARED": json.dumps(shared)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        done, current, ended = _watch(proc, report, log, shared, deadline, tick)
        if current is not None:
            done.add(current)
        if report.status("environment") == "failed":
            return
        if not done:  # the child died before its first step: retrying would fail the same way
            report.add({"step": pending[0], "status": "failed", "error": f"the check's child process did not start a step: {ended}"})
            return
        pending = [n for n in pending if n not in done]


def _watch(proc: subprocess.Popen, report: Report, log, shared: dict, deadline: float,
           tick: Callable[[], None]) -> tuple[set[str], str | None, str]:
    """Relay a child's output until it ends or its step overruns: -> (recorded steps, the step in flight, how it ended)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    done: set[str] = set()
    current, started, step_deadline, buffer, tail, killed = None, 0.0, math.inf, b"", deque(maxlen=20), None
    while True:
        tick()
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


def rerun_line(args: argparse.Namespace, report: Report) -> str:
    """The command that reruns what failed or was skipped, with a budget that fits its plan and the margin."""
    redo = [r["step"] for r in report.data["steps"] if r["step"] in STEPS and r["status"] != "ok"]
    if not redo:
        return "rerun: nothing failed or was skipped"
    budget = math.ceil((plan(redo, 0)["total_s"] + MIN_MARGIN_S) / 10) * 10
    out = "$OUT" if os.environ.get("OUT") == str(args.out) else shlex.quote(str(args.out))
    words = ["python3", "scripts/gpu_check.py", "--out", out, "--budget", str(budget), "--only", ",".join(redo)]
    words += ["--cpu-dry-run"] if args.cpu_dry_run else []
    words += ["--build-dir", shlex.quote(str(args.build_dir))] if args.build_dir != DEFAULT_BUILD_DIR else []
    words += ["--fallback-wheels", shlex.quote(str(args.fallback_wheels))] if args.fallback_wheels != FALLBACK_WHEELS else []
    env = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if os.environ.get("PYTHONPATH") else ""
    return f"rerun (warm machine, sent at once): {env}{' '.join(words)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "outputs" / "gpu_check")),
                        help="folder for gpu_check.json, gpu_check.log and gsplat_build.log (default $OUT)")
    parser.add_argument("--budget", type=float, default=420, help="wall-clock seconds for everything")
    parser.add_argument("--only", type=lambda s: s.split(","), help=f"comma-separated steps of: {', '.join(STEPS)}")
    parser.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU (the build runs and stops)")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="TORCH_EXTENSIONS_DIR for gsplat's build")
    parser.add_argument("--fallback-wheels", type=Path, default=FALLBACK_WHEELS,
                        help="folder of the gsplat wheel to build if the installed one does not (gpu_check_prepare.sh)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child.split(","), args.cpu_dry_run)
        return
    unknown = sorted(set(args.only or ()) - set(STEPS))
    if unknown:
        parser.error(f"--only: unknown steps {unknown}; choose from {', '.join(STEPS)}")
    names = [n for n in STEPS if not args.only or n in args.only]
    schedule = plan(names, args.budget)
    if schedule["margin_s"] < MIN_MARGIN_S:
        parser.error(f"{describe(schedule)}: under the {MIN_MARGIN_S} s margin; raise --budget or choose fewer steps")
    print(describe(schedule), flush=True)

    started = time.time()
    deadline = started + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    arch = card_arch()
    env = child_env(args, deadline, arch)
    report = Report(args.out / "gpu_check.json", {"dry_run": args.cpu_dry_run, "budget_s": args.budget, "argv": sys.argv[1:],
                                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "plan": schedule,
                                                  "arch_list": arch and f"{arch} (nvidia-smi compute_cap)"})
    build, shared = None, {}
    if schedule["build_s"]:
        build = GsplatBuild(env, args.out / "gsplat_build.log", args.build_dir, args.fallback_wheels, args.cpu_dry_run)
        build.start()
        shared["gsplat_building"] = True
    tick = (lambda: build.poll(deadline)) if build else (lambda: None)
    with open(args.out / "gpu_check.log", "a") as log:
        run_children(args, [n for n in names if not STEPS[n].after_build], env, report, log, shared, deadline, tick)
        after = [n for n in names if STEPS[n].after_build]
        if report.status("environment") == "failed":
            if build:
                build.stop("the environment step failed")
            for name in (n for n in names if report.status(n) is None):
                report.add({"step": name, "status": "skipped", "reason": "the environment step failed"})
        else:
            if build:
                # Wait for the build while the steps after it that need no gsplat still fit.
                rest = CHILD_START_S + sum(STEPS[n].estimate_s for n in after if not STEPS[n].needs_gsplat)
                while not build.done and deadline - time.time() > rest:
                    build.poll(deadline)
                    time.sleep(1)
                build.stop("still building when only the steps that need no gsplat fitted")
                report.add(build.record())
                shared.update(build.shared(), gsplat_building=False)
                env = {**env, **(build.overrides if build.ok else {})}
            run_children(args, after, env, report, log, shared, deadline, lambda: None)
    report.data["meta"].update(card=shared.get("card", "cpu"), gsplat=shared.get("gsplat_version"), shared=shared,
                               wall_s=round(time.time() - started, 1))
    report.write()
    print(summary(report))
    print(f"{describe(schedule)}; took {report.data['meta']['wall_s']:.0f} s")
    print(f"records: {report.path}")
    print(rerun_line(args, report))
    sys.exit(1 if any(r["status"] == "failed" for r in report.data["steps"]) else 0)


if __name__ == "__main__":
    main()
