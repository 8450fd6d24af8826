"""The training stream's data path: pixels rendered per pixel trained, bytes through Ray's object store per
training sample, data-wait against the generator actor count, and peak generator-actor memory.

    .venv/bin/python benchmarks/stream.py --config configs/paper.yaml --quick    # this 2-core machine, < 5 min
    .venv/bin/python benchmarks/stream.py --config configs/paper.yaml --trainer configs/gpu.yaml \\
        --actors 4 8 12 16 --steps 200 --memory-objects 1000                       # a GPU node, paper settings

1. Accounting, on a local Ray at the config's stage-1 data settings (cameras, views, resolution, k, supersample):
   the same ids through the training stream and, as the baseline measured in the same run, through full
   renders (every view at render.resolution, raw bytes: what the stream shipped per sample before).
2. Data-wait: `--trainer`'s model and training loop (default configs/tiny.yaml, a CPU model) fed by the
   config's zeroverse/render/data settings, fresh objects, for each actor count; ratios against the first.
3. Memory: one generator actor class inside a Ray worker (the cluster's env, malloc settings included)
   renders --memory-objects objects; its peak RSS against the Ray memory request (generator_memory_bytes).
--quick scales what this machine cannot run in minutes, and says so: for steps 2 and 3 training resolution
32 px, mesh resolution 16, textures 64 px, 20 steps, a 16-sample shuffle window, 300 objects for memory.
Data-wait is read from the second half of the steps (the first half holds actor and trainer start-up).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from zv_ray.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
QUICK_SCALE = ["train.resolution=32", "zeroverse.mesh_resolution=16", "zeroverse.texture.resolution=64"]


def batch_bytes(batch: dict[str, np.ndarray]) -> int:
    return sum(np.asarray(v).nbytes for v in batch.values())


def account(cfg: RunConfig, objects: int) -> dict[str, float]:
    """Stream vs full renders of the same ids: pixels rendered per pixel trained, bytes per training sample."""
    import pyarrow as pa

    from zv_ray.data.records import object_cameras, sample_picks
    from zv_ray.pipeline import render_stream, unit_stream

    per_sample_views = cfg.train.num_input_views + cfg.train.num_target_views
    trained = rendered = samples = stream_bytes = 0
    ids = np.arange(objects, dtype=np.int64)
    units = pa.table({"unit": ids, "source": 0 * ids, "index": ids, "view_pass": 0 * ids})  # one pass of views
    for batch in unit_stream(cfg, zeroverse_source(objects), units, 2).iter_batches(batch_size=None):
        samples += len(batch["object_id"])
        stream_bytes += batch_bytes(batch)
        trained += batch["rgb"].shape[0] * batch["rgb"].shape[1] * cfg.train.resolution**2
    # Each object's views are rendered once (render_samples), at train.resolution.
    rendered = sum(len(np.unique(sample_picks(cfg, i, 0, object_cameras(cfg.seed, i, cfg.render)[1]))) for i in range(objects)) * cfg.train.resolution**2
    full_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"image_format": "raw"})})
    full = render_stream(full_cfg, 0, objects).iter_batches(batch_size=None, batch_format="pyarrow")
    full_bytes = sum(table.nbytes for table in full)  # raw views: what the stream shipped per sample before
    full_pixels = objects * cfg.render.num_views * cfg.render.resolution**2
    return {
        "objects": objects, "samples": samples, "ratio": rendered / trained, "gl_ratio": rendered * cfg.render.supersample**2 / trained,
        "bytes_per_sample": stream_bytes / samples, "baseline_ratio": full_pixels / (objects * per_sample_views * cfg.train.resolution**2),
        "baseline_bytes_per_sample": full_bytes / objects,
    }


def zeroverse_source(objects: int) -> list[dict]:
    """pipeline.source_sets for Zeroverse ids 0 .. objects - 1 alone."""
    return [{"kind": "zeroverse", "first_id": 0, "count": objects}]


def fed_trainer(cfg: RunConfig, trainer: Path, overrides: list[str]) -> RunConfig:
    """The trainer config's model and loop, fed by cfg's generator, render and stream settings (overrides last)."""
    from zv_ray.config.base import apply_overrides, validate_dict

    base = load_config(trainer).model_dump(mode="json")
    base["zeroverse"], base["render"] = cfg.zeroverse.model_dump(mode="json"), cfg.render.model_dump(mode="json")
    for key in ("samples_per_object", "shuffle_window", "prefetch_batches"):
        base["data"][key] = getattr(cfg.data, key)
    return validate_dict(RunConfig, apply_overrides(base, overrides), source=f"{trainer} fed by the stream settings")


def data_wait(cfg: RunConfig, trainer: Path, actors: int, steps: int, overrides: list[str], root: Path) -> dict[str, float]:
    import ray

    from zv_ray.tracking import run_metrics
    from zv_ray.train.trainer import run_training

    fed = fed_trainer(cfg, trainer, overrides)
    batch = fed.train.global_batch_size
    fed = fed_trainer(cfg, trainer, [
        *overrides, f"data.num_generator_actors={actors}", f"data.num_objects={-(-steps * batch // fed.data.samples_per_object)}",
        "data.materialize=false", "data.num_val_objects=0", f"train.steps={steps}", f"train.log_every={steps // 2}",
        f"train.checkpoint_every={steps}", f"train.image_every={steps}", f"train.warmup_steps={min(steps, 10)}",
        f"cluster.local_num_cpus={2 + actors + 1}", f"cluster.storage_path={root}", f"cluster.run_name=stream-{actors}",
    ])
    outcome = run_training(fed)
    ray.shutdown()
    metrics = run_metrics(outcome.tracking_uri, outcome.mlflow_run_id)
    return {"samples_per_s": metrics["perf/samples_per_s"], "data_wait_frac": metrics["perf/data_wait_frac"]}


def actor_memory(config: dict, objects: int, every: int = 50) -> dict[str, float]:
    """Runs inside a Ray worker: the generator actor class over `objects` ids; RSS samples and peak, MB."""
    import psutil

    from actors.samples import SampleActor

    actor = SampleActor(config, zeroverse_source(objects))
    proc, rss = psutil.Process(), []
    start = time.process_time()
    for i in range(objects):
        actor({"unit": np.array([i]), "source": np.array([0]), "index": np.array([i]), "view_pass": np.array([0])})
        if (i + 1) % every == 0:
            rss.append(proc.memory_info().rss / 2**20)
    return {"rss": rss, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "core_s_per_object": (time.process_time() - start) / objects}


def memory(cfg: RunConfig, objects: int) -> dict[str, float]:
    import ray

    from zv_ray.pipeline import generator_memory_bytes

    got = ray.get(ray.remote(num_cpus=1)(actor_memory).remote(cfg.model_dump(mode="json"), objects))
    return {**got, "request": generator_memory_bytes(cfg, "samples") / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "paper.yaml")
    parser.add_argument("--trainer", type=Path, default=REPO / "configs" / "tiny.yaml", help="model + loop for data-wait")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--objects", type=int, default=8, help="objects for the pixel and byte accounting")
    parser.add_argument("--memory-objects", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="scaled to a 2-core machine (see above)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args()
    steps, scale = (20, QUICK_SCALE) if args.quick else (args.steps, [])
    memory_objects = min(args.memory_objects, 300) if args.quick else args.memory_objects
    wait_overrides = [*scale, *(["data.shuffle_window=16"] if args.quick else []), *args.overrides]

    from zv_ray.cluster.session import init_ray

    # The config's data settings with this machine's actors: two, on any node type.
    local = ["data.num_generator_actors=2", "data.generator_resource=null"]
    cfg = load_config(args.config, [*local, *args.overrides])
    started = time.perf_counter()
    init_ray(cfg.cluster.model_copy(update={"ray_address": None, "local_num_cpus": 4}))
    acc = account(cfg, args.objects)
    mem_cfg = load_config(args.config, [*local, *scale, *args.overrides])
    mem = memory(mem_cfg, memory_objects)
    import ray

    ray.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {n: data_wait(cfg, args.trainer, n, steps, wait_overrides, Path(tmp)) for n in args.actors}

    d, t, r = cfg.data, cfg.train, cfg.render
    print(f"\nstream benchmark: {args.config.name}, stage-1 data settings: {r.num_views}-camera pool, "
          f"{t.num_input_views}+{t.num_target_views} views at {t.resolution} px, k={d.samples_per_object}, supersample {r.supersample}")
    print(f"accounting over {acc['objects']} objects ({acc['samples']} samples), baseline = full renders "
          f"({r.num_views} views at {r.resolution} px per sample) of the same ids:")
    print(f"pixels rendered per pixel trained: {acc['ratio']:.2f}")
    print(f"  baseline {acc['baseline_ratio']:.2f}  ({acc['baseline_ratio'] / acc['ratio']:.1f}x fewer); GL samples per "
          f"pixel trained (x supersample^2): {acc['gl_ratio']:.2f}")
    print(f"bytes through the object store per training sample: {acc['bytes_per_sample'] / 2**20:.2f} MiB  baseline "
          f"{acc['baseline_bytes_per_sample'] / 2**20:.2f} MiB  ({acc['baseline_bytes_per_sample'] / acc['bytes_per_sample']:.1f}x fewer)")
    print(f"\ndata-wait, trainer {args.trainer.name}, {steps} steps, fresh objects" + (f" (scaled: {' '.join(wait_overrides)})" if scale else ""))
    base = rows[args.actors[0]]["samples_per_s"]
    print(f"{'actors':>7} {'samples/s':>10} {'data-wait':>10} {'vs ' + str(args.actors[0]) + ' actor(s)':>14}")
    for n, row in rows.items():
        print(f"{n:>7} {row['samples_per_s']:>10.2f} {100 * row['data_wait_frac']:>9.1f}% {row['samples_per_s'] / base:>13.2f}x")
    enough = [n for n, row in rows.items() if row["data_wait_frac"] < 0.05]
    print(f"fewest actors with data-wait < 5%: {enough[0] if enough else 'none of those tried'}")
    rss = mem["rss"]
    print(f"\nactor memory over {memory_objects} objects" + (f" (scaled: {' '.join(scale)})" if scale else "") +
          f": RSS {rss[0]:.0f} MB after {50} objects, {rss[len(rss) // 2]:.0f} MB at half, {rss[-1]:.0f} MB at the end; "
          f"peak {mem['peak']:.0f} MB; Ray memory request {mem['request']:.0f} MB; {mem['core_s_per_object']:.2f} core-s/object")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
