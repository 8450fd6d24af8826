"""Data-wait fraction of training step time against the number of generator actors (online Zeroverse stream).

    .venv/bin/python benchmarks/stream.py                       # tiny model on CPU (this machine)
    .venv/bin/python benchmarks/stream.py --config configs/gpu.yaml --actors 4 8 12 16 --steps 200   # a GPU node

Every run trains on a stream of fresh objects (one pass, nothing materialized) and reads the
`perf/*` metrics the training loop logs to MLflow. The baseline is the first actor count, measured in the
same invocation; the ratio column is samples/s against it. On a GPU node, the smallest actor count with
data-wait under 5% is how many generator actors one GPU trainer needs (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

from zv_ray.config import load_config
from zv_ray.train.trainer import run_training

REPO = Path(__file__).resolve().parents[1]


def measure(config: Path, actors: int, steps: int, overrides: list[str], root: Path) -> dict[str, float]:
    cfg = load_config(config, overrides)
    batch = cfg.train.batch_size_per_worker * cfg.cluster.num_workers
    cfg = load_config(config, [
        *overrides, f"data.num_generator_actors={actors}", f"data.num_objects={steps * batch}", "data.materialize=false",
        "data.num_val_objects=0", f"train.steps={steps}", f"train.log_every={steps}", f"train.checkpoint_every={steps}",
        f"train.image_every={steps}", f"train.warmup_steps={min(steps, 10)}", f"cluster.local_num_cpus={2 + actors + 1}",
        f"cluster.storage_path={root}", f"cluster.run_name=stream-{actors}",
    ])
    outcome = run_training(cfg)
    ray.shutdown()
    metrics = MlflowClient(outcome.tracking_uri).get_run(outcome.mlflow_run_id).data.metrics
    return {"samples_per_s": metrics["perf/samples_per_s"], "data_wait_frac": metrics["perf/data_wait_frac"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        rows = {n: measure(args.config, n, args.steps, args.overrides, Path(tmp)) for n in args.actors}
    base = rows[args.actors[0]]["samples_per_s"]
    print(f"\nstreaming benchmark: {args.config.name}, {args.steps} steps, fresh objects every step")
    print(f"{'actors':>7} {'samples/s':>10} {'data-wait':>10} {'vs ' + str(args.actors[0]) + ' actor(s)':>14}")
    for n, row in rows.items():
        print(f"{n:>7} {row['samples_per_s']:>10.2f} {100 * row['data_wait_frac']:>9.1f}% {row['samples_per_s'] / base:>13.2f}x")
    enough = [n for n, row in rows.items() if row["data_wait_frac"] < 0.05]
    print(f"fewest actors with data-wait < 5%: {enough[0] if enough else 'none of those tried'}")


if __name__ == "__main__":
    main()
