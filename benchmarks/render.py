"""Objects/s and training samples/s per CPU core of the generator actor, on OSMesa and EGL.

    .venv/bin/python benchmarks/render.py --config configs/paper.yaml                 # stage-1 stream + 32 x 512 dataset
    .venv/bin/python benchmarks/render.py --config configs/paper.yaml --objects 2 --k 1 4 --backends osmesa

Each GL platform runs in its own process (PyOpenGL binds one per process), through the actor class the
pipelines use (actors/render.py), without Ray. "Per core" divides by the process's CPU seconds, since
Mesa's llvmpipe renders on several threads. Paths measured on the same objects:
  - dataset: every render.num_views view at render.resolution, PNG-encoded (`zv-ray dataset`);
  - stream k: data.samples_per_object = k samples of train views at train.resolution (the training stream);
  - baseline: the stream as it was, every view at render.resolution shipped per training sample (a
    dataset render without encoding or supersampling), measured in the same process.
Ratios are against that baseline and against the official Blender pipeline (Cycles, 64 samples, 32 views
at 512 px): about 1,440 core-seconds per object on this machine's CPU (issue 14).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from per_backend import run_per_backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

BLENDER_CORE_S_PER_OBJECT = 1440.0


def cpu_seconds(fn, ids) -> float:
    start = time.process_time()
    for i in ids:
        fn({"id": [i]})
    return time.process_time() - start


def measure(backend: str, config: str | None, overrides: list[str], objects: int, ks: list[int]) -> dict:
    """Runs in a child process pinned to `backend`: CPU seconds per path over the same objects."""
    os.environ["ZV_RAY_GL"] = backend
    import numpy as np

    from actors.render import ZeroverseRenderActor
    from actors.samples import SampleActor
    from zv_ray.config import load_config
    from zv_ray.data.records import object_cameras, render_object, sample_picks
    from zv_ray.render.renderer import Renderer

    cfg = load_config(config, overrides)
    ids = range(1, objects + 1)
    out: dict = {"backend": backend, "objects": objects, "render": cfg.render.model_dump(), "train_res": cfg.train.resolution,
                 "views_per_sample": cfg.train.num_input_views + cfg.train.num_target_views, "stream": {}}
    dataset = ZeroverseRenderActor(cfg.model_dump(mode="json"), 0)
    dataset({"id": [0]})  # warm-up: GL context, shader compile, codecs (once per actor)
    out["dataset_s"] = cpu_seconds(dataset, ids)
    dataset.renderer.close()
    old = load_config(config, [*overrides, "render.supersample=1"])  # the old stream's edges: none on OSMesa
    with Renderer.from_config(old.render) as renderer:
        render_object(old.seed, 0, old, renderer)
        out["baseline_s"] = cpu_seconds(lambda batch: render_object(old.seed, int(batch["id"][0]), old, renderer), ids)
    for k in ks:
        kcfg = load_config(config, [*overrides, f"data.samples_per_object={k}"])
        samples = SampleActor(kcfg.model_dump(mode="json"), [{"kind": "zeroverse", "first_id": 0, "count": objects + 1}])
        actor = lambda batch: samples({"unit": np.asarray(batch["id"]), "source": np.zeros(1, np.int64),  # noqa: E731
                                       "index": np.asarray(batch["id"]), "view_pass": np.zeros(1, np.int64)})
        actor({"id": [0]})
        rendered = sum(len(np.unique(sample_picks(kcfg, i, 0, object_cameras(kcfg.seed, i, kcfg.render)[1]))) for i in ids)  # views rendered (each once per object)
        out["stream"][k] = {"cpu_s": cpu_seconds(actor, ids), "views_rendered": rendered}
        samples.renderer.close()
    return out


def report(r: dict) -> None:
    n, rc, vps, res = r["objects"], r["render"], r["views_per_sample"], r["train_res"]
    base = r["baseline_s"] / n  # core-seconds per training sample, the old stream
    print(f"\n== {r['backend']}: {n} objects, supersample {rc['supersample']}")
    ds = r["dataset_s"] / n
    print(f"  dataset {rc['num_views']} x {rc['resolution']} px + PNG: {ds:6.2f} core-s/object  {1 / ds:6.3f} objects/s/core"
          f"  ({BLENDER_CORE_S_PER_OBJECT / ds:,.0f}x Blender's {BLENDER_CORE_S_PER_OBJECT:,.0f} core-s)")
    print(f"  baseline stream (all {rc['num_views']} views at {rc['resolution']} px per sample, no supersampling): "
          f"{base:6.2f} core-s/sample")
    print(f"  stream: {vps} views at {res} px per sample, k samples per object")
    print(f"  {'k':>4} {'core-s/object':>14} {'samples/s/core':>15} {'vs baseline':>12} {'px rendered/px trained':>23}")
    for k, row in r["stream"].items():
        per_object = row["cpu_s"] / n
        ratio = row["views_rendered"] / (n * int(k) * vps)
        print(f"  {k:>4} {per_object:14.3f} {int(k) / per_object:15.2f} {base / (per_object / int(k)):11.1f}x {ratio:23.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="run config whose zeroverse/render/train/data settings to use")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="samples per object to try")
    parser.add_argument("--backends", nargs="+", default=["osmesa", "egl"], choices=["osmesa", "egl"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--child", choices=["osmesa", "egl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.config, args.overrides, args.objects, args.k)))
        return
    run_per_backend(__file__, args.backends, ["--objects", str(args.objects), "--k", *map(str, args.k)], args.config, args.overrides, report)

if __name__ == "__main__":
    main()
