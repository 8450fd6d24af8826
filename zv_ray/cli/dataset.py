"""`zv-ray dataset --n 1000 --out DIR [--views 32 --res 512 --config CONFIG --set key=value ...]`.

    zv-ray dataset --n 64 --out outputs/dataset                                  # local Ray
    ray job submit --working-dir . -- zv-ray dataset --n 100000 --out s3://BUCKET/zeroverse --config configs/paper.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from zv_ray.config import RunConfig


def dataset(
    out: str = typer.Option(..., "--out", help="Folder or s3:// / gs:// prefix for the Parquet shards (must hold none yet)"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Objects to render [default: data.num_objects]"),
    views: Optional[int] = typer.Option(None, "--views", min=1, help="Views per object [default: render.num_views]"),
    res: Optional[int] = typer.Option(None, "--res", min=8, help="Image side in pixels [default: render.resolution]"),
    config: Optional[Path] = typer.Option(None, "--config", help="Run config YAML (defaults when omitted)"),
    first_id: Optional[int] = typer.Option(
        None, "--first-id", min=0, help="First object id [default: data.first_object_id]"
    ),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value: section.key=value"),
    sheet: bool = typer.Option(
        True, "--contact-sheet/--no-contact-sheet", help="Write contact_sheet.png beside the shards"
    ),
) -> None:
    """Generate and render Zeroverse objects with Ray Data actors into validated Parquet shards."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from zv_ray.cluster.resources import cluster_supply, dataset_phases, require_fit
    from zv_ray.cluster.session import init_ray, is_local
    from zv_ray.config import load_config
    from zv_ray.pipeline import check_output_folder
    from zv_ray.io import storage

    sets = list(overrides or [])
    sets += [f"render.num_views={views}"] if views else []
    sets += [f"render.resolution={res}"] if res else []
    cfg = load_config(config, sets)
    count = n or cfg.data.num_objects
    start_id = cfg.data.first_object_id if first_id is None else first_id
    console = Console()
    out = storage.absolute(out)
    check_output_folder(out)  # an existing file, old shards or an unwritable bucket fail before Ray starts

    init_ray(cfg.cluster)
    require_fit(dataset_phases(cfg), cluster_supply(local=is_local(cfg.cluster)))  # in seconds, not a silent wait
    import ray.data

    from zv_ray.pipeline import write_dataset

    # The rich bar below replaces Ray Data's progress bars and per-dataset log lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    console.print(
        f"rendering objects {start_id}..{start_id + count - 1}: {cfg.render.num_views} views at "
        f"{cfg.render.resolution} px, {cfg.data.num_generator_actors} actors -> {out}"
    )
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("objects", total=count)
        summary = write_dataset(
            cfg, out, count, start_id, on_shard=lambda shard: progress.advance(task, len(shard["object_ids"]))
        )

    console.print(
        f"[bold green]done[/] {summary['objects']} objects, {summary['views']} views, {summary['shards']} shards, "
        f"{summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s "
        f"({summary['objects'] / summary['seconds']:.2f} objects/s)"
    )
    if sheet:
        path = write_contact_sheet(cfg, out)
        console.print(f"contact sheet: {path}")


def write_contact_sheet(cfg: RunConfig, out: str) -> str:
    """Sheet for the first object in the shards: its stored views and poses against regenerated geometry."""
    import tempfile

    from zv_ray.data.parquet import read_shards
    from zv_ray.io import storage
    from zv_ray.render.frusta import contact_sheet, surface_points
    from zv_ray.zeroverse import generate_object

    record = next(read_shards(out))
    obj = generate_object(int(record["seed"]), int(record["object_id"]), cfg.zeroverse)
    with tempfile.TemporaryDirectory() as tmp:
        sheet = contact_sheet(
            record["rgba"],
            record["intrinsics"],
            record["c2w"],
            surface_points(obj.scene),
            Path(tmp) / "contact_sheet.png",
            title=f"object {record['object_id']}: stored poses vs regenerated surface",
        )
        return storage.upload_file(sheet, storage.join(out, "contact_sheet.png"))
