"""GS-LRM step time, memory and MFU; rasterizer speed ratios.

    .venv/bin/python benchmarks/model.py                     # CPU: tiny step, torch rasterizer tiles vs dense
    .venv/bin/python benchmarks/model.py --device cuda       # GPU: + paper size with MFU, gsplat vs torch
    .venv/bin/python benchmarks/model.py --out bench.json    # also write the figures as JSON

A training step is what the trainer does: model forward on the input views, render inputs + targets,
MSE backward, AdamW step. On CPU it runs on --threads threads (1: one DDP worker's share of this 2-core
machine) and reports CPU seconds beside wall seconds, since other processes share the cores.
Paper-size figures need CUDA and are skipped cleanly without it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from zv_ray.config.model import ModelConfig
from zv_ray.model import GSLRM, TINY, flops_per_step, num_params
from zv_ray.splat import render_gaussians, torch_rasterizer
from zv_ray.splat.rasterize import c2w_to_viewmat, intrinsics_to_K
from zv_ray.splat.synthetic import blob_views

# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeats: int) -> dict:
    """Median wall and CPU seconds of fn() over repeats runs, after one warm-up run."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def train_step_bench(
    cfg: ModelConfig, batch: int, inputs: int, targets: int, res: int, device: torch.device, repeats: int
) -> dict:
    images, intrinsics, c2w = (t.to(device).expand(batch, *t.shape[1:]) for t in blob_views(inputs + targets, res))
    model = GSLRM(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step():
        g = model(images[:, :inputs], intrinsics[:, :inputs], c2w[:, :inputs])
        rgb, _ = render_gaussians(g, intrinsics, c2w, res, res, (1.0, 1.0, 1.0))
        loss = ((rgb.permute(0, 1, 4, 2, 3) - images) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = _timed(step, device, repeats)
    out.update(batch=batch, views=f"{inputs}+{targets}", res=res, params=num_params(model), gaussians=inputs * res * res)
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        flops = flops_per_step(cfg, batch, inputs, res)
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        out.update(model_tflop_per_step=flops / 1e12, device=name)
        out["mfu"] = flops / out["wall_s"] / peak if peak and cfg.bf16 else None
    else:
        out["process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def raster_bench(device: torch.device, num_views: int, res: int, repeats: int, backends: dict) -> dict:
    """Forward + backward of the step-0 tiny model's Gaussians (one per input pixel of 4 views) into num_views views."""
    images, intrinsics, c2w = (t.to(device) for t in blob_views(num_views, res))
    torch.manual_seed(0)
    g = GSLRM(ModelConfig(**TINY, bf16=False)).to(device)(images[:, :4], intrinsics[:, :4], c2w[:, :4]).detach()
    viewmats, Ks = c2w_to_viewmat(c2w), intrinsics_to_K(intrinsics)
    bg = torch.ones(1, num_views, 3, device=device)
    out = {"gaussians": g.num, "views": num_views, "res": res}
    for name, fn in backends.items():
        params = [t.clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]

        def run():
            rgb, alpha, _ = fn(*params, viewmats, Ks, res, res, backgrounds=bg)
            (rgb.sum() + alpha.sum()).backward()

        out[name] = _timed(run, device, repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (one DDP worker's share here)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads} threads"}

    tiny = ModelConfig(**TINY, bf16=device.type == "cuda")
    results["tiny_step"] = [train_step_bench(tiny, b, 4, 4, 32, device, args.repeats) for b in (1, 2)]
    results["tiny_step_64px"] = train_step_bench(tiny, 1, 4, 4, 64, device, max(2, args.repeats // 2))

    torch_tiles = torch_rasterizer.rasterization
    if device.type == "cuda":
        paper = ModelConfig(grad_checkpoint=True)  # 24 x 1024, 16 heads, bf16
        results["paper_step_256px"] = train_step_bench(paper, 8, 4, 4, 256, device, args.repeats)
        results["paper_step_512px"] = train_step_bench(paper, 2, 4, 4, 512, device, args.repeats)
        from gsplat import rasterization as gsplat_rasterization

        backends = {"gsplat": gsplat_rasterization, "torch_tiles": torch_tiles}
        for key, (views, res) in {"raster_32px": (8, 32), "raster_128px": (8, 128)}.items():
            r = raster_bench(device, views, res, args.repeats, backends)
            r["torch_over_gsplat"] = r["torch_tiles"]["wall_s"] / r["gsplat"]["wall_s"]
            results[key] = r
    else:
        results["paper_step"] = "skipped: needs CUDA"
        results["gsplat_vs_torch"] = "skipped: needs CUDA"
        dense = lambda *a, **k: torch_rasterizer.rasterization(*a, mode="dense", **k)  # noqa: E731
        r = raster_bench(device, 8, 32, args.repeats, {"torch_tiles": torch_tiles, "torch_dense": dense})
        r["dense_over_tiles_cpu"] = r["torch_dense"]["cpu_s"] / r["torch_tiles"]["cpu_s"]
        results["raster_32px"] = r

    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
