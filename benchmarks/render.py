"""Objects/s and views/s per CPU core for generate -> render -> encode, on OSMesa and EGL.

    .venv/bin/python benchmarks/render.py                      # 32 views x 512^2, 3 objects per platform
    .venv/bin/python benchmarks/render.py --objects 2 --res 256 --backends osmesa

Each GL platform runs in its own process (PyOpenGL binds one per process). "Per core" divides by the
process's CPU seconds, since Mesa's llvmpipe renders on several threads. The baseline, measured in
the same process on the same objects, is a per-object script: a new GL context for every object and
PIL's default PNG level 6. Set the printed objects/s per core against the official Blender pipeline
(Cycles, 64 samples, 32 views at 512 px per object).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

STAGES = ("generate", "render", "encode")


@contextmanager
def clock(times: dict[str, list[float]], stage: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    times[stage] = [time.perf_counter() - wall, time.process_time() - cpu]


def time_object(cfg, renderer, seed: int, object_id: int) -> tuple[dict, dict, int]:
    """(ours, baseline) stage -> [wall, cpu] seconds for one object, and its PNG bytes."""
    import numpy as np

    from zv_ray.data.schema import records_to_table
    from zv_ray.render.cameras import cameras_for
    from zv_ray.render.objects import CAMERA_STAGE
    from zv_ray.render.renderer import Renderer
    from zv_ray.zeroverse import generate_object
    from zv_ray.zeroverse.rng import stage_rng

    ours: dict[str, list[float]] = {}
    base: dict[str, list[float]] = {}
    with clock(ours, "generate"):
        obj = generate_object(seed, object_id, cfg.zeroverse)
    intrinsics, c2w = cameras_for(stage_rng(seed, object_id, CAMERA_STAGE), cfg.render)
    with clock(ours, "render"):
        out = renderer.render(obj.scene, intrinsics, c2w)
    rgba = np.concatenate([out.rgb, out.alpha[..., None]], axis=-1)
    record = {"object_id": object_id, "seed": seed, "config_hash": "-", "params_json": "{}",
              "intrinsics": intrinsics, "c2w": c2w, "rgba": rgba}
    with clock(ours, "encode"):
        table = records_to_table([record], "png", cfg.data.png_compress_level)
    with clock(base, "render"):
        with Renderer.from_config(cfg.render) as fresh:
            fresh.render(obj.scene, intrinsics, c2w)
    with clock(base, "encode"):
        records_to_table([record], "png", 6)
    return ours, base, table.column("views")[0].values.nbytes


def measure(backend: str, objects: int, views: int, res: int) -> dict:
    """Runs in a child process pinned to `backend`: summed (wall, cpu) seconds per stage, ours and baseline."""
    os.environ["ZV_RAY_GL"] = backend
    from zv_ray.config import load_config
    from zv_ray.render.renderer import Renderer

    sizes = [f"render.num_views={views}", f"render.resolution={res}"]
    cfg = load_config(None, [*sizes, "train.num_input_views=1", "train.num_target_views=0"])
    renderer = Renderer.from_config(cfg.render)
    # One uncounted object first: GL context, shader variants and codec start-up happen once per actor.
    warmup = time.perf_counter()
    time_object(cfg, renderer, cfg.seed + 1, 0)
    warmup = time.perf_counter() - warmup
    ours = {s: [0.0, 0.0] for s in STAGES}
    base = {s: [0.0, 0.0] for s in ("render", "encode")}
    png_bytes = 0
    for object_id in range(objects):
        one, one_base, nbytes = time_object(cfg, renderer, cfg.seed, object_id)
        png_bytes += nbytes
        for totals, add in ((ours, one), (base, one_base)):
            for stage in totals:
                totals[stage] = [a + b for a, b in zip(totals[stage], add[stage])]
    return {"backend": backend, "objects": objects, "views": views, "ours": ours, "baseline": base,
            "warmup_s": warmup, "png_bytes_per_view": png_bytes / (objects * views)}


def report(r: dict) -> None:
    n, views, ours, base = r["objects"], r["views"], r["ours"], r["baseline"]
    cpu = {s: ours[s][1] for s in STAGES}
    total_cpu = sum(cpu.values())
    base_cpu = cpu["generate"] + base["render"][1] + base["encode"][1]
    kib = r["png_bytes_per_view"] / 1024
    print(f"\n== {r['backend']}: {n} objects x {views} views, {kib:.0f} KiB per PNG view")
    print(f"  warm-up object (GL context, shaders, codecs; once per actor): {r['warmup_s']:.2f} s wall")
    for s in STAGES:
        share = 100 * cpu[s] / total_cpu
        print(f"  {s:9s} {ours[s][0] / n:6.2f} s wall  {cpu[s] / n:6.2f} s cpu per object  ({share:4.1f}% of cpu)")
    print(f"  render alone: {n * views / cpu['render']:.1f} views/s per core")
    print(f"  objects/s per core: {n / total_cpu:.3f}   views/s per core: {n * views / total_cpu:.2f}")
    print(f"  baseline (new context per object, PNG level 6): {n / base_cpu:.3f} objects/s per core")
    print(f"  ratio ours / baseline: {base_cpu / total_cpu:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--backends", nargs="+", default=["osmesa", "egl"], choices=["osmesa", "egl"])
    parser.add_argument("--child", choices=["osmesa", "egl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.objects, args.views, args.res)))
        return
    print(f"cpu cores visible: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    for backend in args.backends:
        sizes = ["--objects", str(args.objects), "--views", str(args.views), "--res", str(args.res)]
        cmd = [sys.executable, __file__, "--child", backend, *sizes]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"\n== {backend}: failed\n{proc.stderr[-2000:]}")
            continue
        report(json.loads(proc.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
