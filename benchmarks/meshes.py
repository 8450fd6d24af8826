"""`zv-ray dataset --meshes` throughput per CPU core on real scans, beside the Zeroverse dataset's in the same run.

    .venv/bin/python benchmarks/meshes.py                                   # the 15 shared scans, 32 views x 512 px
    .venv/bin/python benchmarks/meshes.py --scans 2 --zeroverse 1 --set render.num_views=4 --set render.resolution=32

Both paths run through the actor classes the pipelines use (actors/render.py), without Ray, in a child process
pinned to one GL platform (PyOpenGL binds one per process): MeshRenderActor (load the .obj with its 1024 px
texture, normalize, render every view, PNG-encode) over the scans, and ZeroverseRenderActor (generate, render,
encode) over as many Zeroverse ids, at the same render settings. "Per core" divides by the process's CPU
seconds, since Mesa's llvmpipe renders on several threads. Loading alone is timed too, over the same scans.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from per_backend import run_per_backend

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without installing
SCANS = REPO.parent / "shared" / "train" / "gso"


def cpu_seconds(fn, items) -> float:
    start = time.process_time()
    for item in items:
        fn(item)
    return time.process_time() - start


def measure(backend: str, config: str | None, overrides: list[str], scans: int, zeroverse: int) -> dict:
    """Runs in a child process pinned to `backend`: CPU seconds of each path."""
    os.environ["ZV_RAY_GL"] = backend
    import numpy as np

    from actors.render import MeshRenderActor, ZeroverseRenderActor
    from zv_ray.config import load_config
    from zv_ray.data.meshes import load_textured, mesh_entries, meshes_under
    from zv_ray.data.records import MESH_SOURCE, source_name

    cfg = load_config(config, overrides)
    paths = [p for folder in mesh_entries(str(SCANS))[1] for p in meshes_under(folder)][:scans]
    batches = [{"path": np.array([p]), "source": np.array([source_name(MESH_SOURCE, str(SCANS), p)])} for p in paths]
    meshes = MeshRenderActor(cfg.model_dump(mode="json"))
    meshes(batches[0])  # warm-up: GL context, shader compile, codecs (once per actor)
    out = {"backend": backend, "render": cfg.render.model_dump(), "scans": len(paths), "zeroverse": zeroverse}
    start = time.process_time()
    scenes = [load_textured(p, cfg.zeroverse.normalized_extent) for p in paths]
    out["load_s"] = time.process_time() - start
    out["faces"] = [sum(len(g.faces) for g in scene.geometry.values()) for scene in scenes]
    out["meshes_s"] = cpu_seconds(meshes, batches)
    meshes.renderer.close()
    generated = ZeroverseRenderActor(cfg.model_dump(mode="json"), 0)
    generated({"id": [0]})
    out["zeroverse_s"] = cpu_seconds(generated, [{"id": [i]} for i in range(1, zeroverse + 1)])
    generated.renderer.close()
    return out


def report(r: dict) -> None:
    rc = r["render"]
    mesh, gen, load = r["meshes_s"] / r["scans"], r["zeroverse_s"] / r["zeroverse"], r["load_s"] / r["scans"]
    size = f"{rc['num_views']} views x {rc['resolution']} px + PNG"
    print(f"\n== {r['backend']}, supersample {rc['supersample']}, {size}")
    print(f"  meshes    {r['scans']:3d} scans ({min(r['faces'])}..{max(r['faces'])} faces): {mesh:7.2f} core-s/object "
          f"{1 / mesh:7.3f} objects/s/core   (loading alone: {load:.2f} core-s)")
    print(f"  zeroverse {r['zeroverse']:3d} objects:{'':24}{gen:7.2f} core-s/object {1 / gen:7.3f} objects/s/core")
    print(f"  meshes / zeroverse throughput: {gen / mesh:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="run config whose render/zeroverse settings to use [default: 32 x 512 px]")
    parser.add_argument("--scans", type=int, default=15, help="how many of the shared training scans to render")
    parser.add_argument("--zeroverse", type=int, default=5, help="Zeroverse objects to render beside them")
    parser.add_argument("--backends", nargs="+", default=["osmesa"], choices=["osmesa", "egl"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--child", choices=["osmesa", "egl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not SCANS.is_dir():
        sys.exit(f"error: the shared training scans are not at {SCANS}")
    if args.child:
        print(json.dumps(measure(args.child, args.config, args.overrides, args.scans, args.zeroverse)))
        return
    run_per_backend(__file__, args.backends, ["--scans", str(args.scans), "--zeroverse", str(args.zeroverse)], args.config, args.overrides, report)

if __name__ == "__main__":
    main()
