"""Zeroverse generation throughput: objects/s per core and the share of time in each stage.

    .venv/bin/python benchmarks/generate.py               # ~1 minute on one core
    .venv/bin/python benchmarks/generate.py --n 64

One process generates objects one after another (one core). Configs: the default config with every
augmentation on (p_boolean = p_wireframe = 1), the same at mesh_resolution 16 (the online-training
setting), and the baseline measured in the same run: the default config with no augmentations.
"""

from __future__ import annotations

import argparse
import statistics
import time

from zv_ray.config import ZeroverseConfig
from zv_ray.zeroverse import generate_object

STAGES = ("parts", "textures", "uv", "boolean", "wireframe", "scene")


def measure(name: str, cfg: ZeroverseConfig, n: int, seed: int) -> float:
    """Print throughput, latency and stage shares; return objects per CPU-second."""
    generate_object(seed, 10**9, cfg)  # warm caches (primitive meshes, imports) outside the timing
    walls, stats = [], []
    cpu0 = time.process_time()
    for object_id in range(n):
        t = time.perf_counter()
        stats.append(generate_object(seed, object_id, cfg).stats)
        walls.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    total = sum(s["t_total"] for s in stats)
    shares = "  ".join(f"{k} {100 * sum(s.get(f't_{k}', 0.0) for s in stats) / total:4.1f}%" for k in STAGES)
    rate = n / cpu
    print(
        f"{name:34s} {rate:6.2f} obj/s/core (CPU time)  {n / sum(walls):6.2f} obj/s wall  "
        f"median {1000 * statistics.median(walls):5.0f} ms  max {1000 * max(walls):5.0f} ms  "
        f"faces {statistics.mean(s['num_faces'] for s in stats):8.0f}  "
        f"boolean fallbacks {sum(s['boolean_failed'] for s in stats)}/{n}"
    )
    print(f"{'':34s} stage shares: {shares}")
    return rate


def glb_export(cfg: ZeroverseConfig, n: int, seed: int) -> None:
    objects = [generate_object(seed, i, cfg) for i in range(n)]
    t = time.perf_counter()
    sizes = [len(o.to_glb()) for o in objects]
    print(f"{'GLB export (all augmentations)':34s} {1000 * (time.perf_counter() - t) / n:5.0f} ms/object, "
          f"{statistics.mean(sizes) / 1e6:.1f} MB/object (not part of generation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="objects per config")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    default = ZeroverseConfig()
    plain = default.model_copy(update={"p_heightfield": 0.0, "p_boolean": 0.0, "p_wireframe": 0.0})
    augmented = default.model_copy(update={"p_boolean": 1.0, "p_wireframe": 1.0})
    baseline = measure("baseline: no augmentations", plain, args.n, args.seed)
    full = measure("default, all augmentations on", augmented, args.n, args.seed)
    fast = measure("  same at mesh_resolution 16", augmented.model_copy(update={"mesh_resolution": 16}), args.n, args.seed)
    print(f"all augmentations vs baseline: {full / baseline:.2f}x throughput; "
          f"at mesh_resolution 16: {fast / baseline:.2f}x")
    glb_export(augmented, min(args.n, 8), args.seed)


if __name__ == "__main__":
    main()
