"""`zv-ray dataset`: Zeroverse objects, real meshes or imported renders -> validated Parquet shards, with Ray Data.

    zv-ray dataset --n 64 --out outputs/dataset                                  # Zeroverse, local Ray
    zv-ray dataset --meshes ../shared/train/gso --out outputs/gso_train --config configs/tiny.yaml
    zv-ray dataset --rendered DIR --out outputs/imported                        # the official folder layout
    ray job submit --working-dir . -- zv-ray dataset --n 100000 --out s3://BUCKET/zeroverse --config configs/paper.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from zv_ray.config import RunConfig


def dataset(
    out: str = typer.Option(..., "--out", help="Folder or s3:// / gs:// prefix for the Parquet shards (must hold none yet)"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Zeroverse objects to render [default: data.num_objects]"),
    meshes: Optional[str] = typer.Option(
        None, "--meshes",
        help="Render every textured mesh (.obj + .mtl + images, .glb, .gltf) under this folder or s3:// prefix instead",
    ),
    rendered: Optional[str] = typer.Option(
        None, "--rendered", help="Import object folders of the official layout (images + opencv_cameras.json) instead"
    ),
    views: Optional[int] = typer.Option(None, "--views", min=1, help="Views per object [default: render.num_views]"),
    res: Optional[int] = typer.Option(None, "--res", min=8, help="Image side in pixels [default: render.resolution]"),
    config: Optional[Path] = typer.Option(None, "--config", help="Run config YAML (defaults when omitted)"),
    first_id: Optional[int] = typer.Option(
        None, "--first-id", min=0, help="First Zeroverse object id [default: data.first_object_id]"
    ),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value: section.key=value"),
    sheet: bool = typer.Option(
        True, "--contact-sheet/--no-contact-sheet", help="Write contact_sheet.png beside the shards"
    ),
) -> None:
    """Render Zeroverse objects or real meshes, or import rendered folders, with Ray Data into validated Parquet shards."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from zv_ray.cluster.resources import cluster_supply, dataset_phases, require_fit
    from zv_ray.cluster.session import init_ray, is_local
    from zv_ray.config import load_config
    from zv_ray.data.layout import find_object_folders
    from zv_ray.data.meshes import mesh_entries
    from zv_ray.io import storage
    from zv_ray.pipeline import check_output_folder

    if meshes and rendered:
        raise typer.BadParameter("give --meshes or --rendered, not both")
    if (meshes or rendered) and (n or first_id is not None):
        raise typer.BadParameter("--n and --first-id choose Zeroverse ids; drop them with --meshes / --rendered")
    if rendered and (views or res):
        raise typer.BadParameter("--views and --res set how objects are rendered; --rendered imports the images as they are")
    sets = list(overrides or [])
    sets += [f"render.num_views={views}"] if views else []
    sets += [f"render.resolution={res}"] if res else []
    cfg = load_config(config, sets)
    console = Console()
    # Bad inputs fail before Ray starts, in one line: a folder without meshes, a malformed cameras file, an
    # existing file, old shards or an unwritable bucket at --out.
    root = storage.absolute(meshes or rendered) if meshes or rendered else None
    if meshes:
        files, folders = mesh_entries(root)
        what, total = f"meshes under {root}: {cfg.render.num_views} views at {cfg.render.resolution} px", None
    elif rendered:
        folders, skipped = find_object_folders(root)
        what, total = f"{len(folders)} object folders from {root}", len(folders)
    else:
        count = n or cfg.data.num_objects
        start_id = cfg.data.first_object_id if first_id is None else first_id
        what = (f"objects {start_id}..{start_id + count - 1}: {cfg.render.num_views} views at {cfg.render.resolution} px, "
                f"{cfg.data.num_generator_actors} actors")
        total = count
    out = storage.absolute(out)
    check_output_folder(out)

    init_ray(cfg.cluster)
    require_fit(dataset_phases(cfg, listing=bool(meshes)), cluster_supply(local=is_local(cfg.cluster)))  # in seconds
    import ray.data

    from zv_ray.pipeline import write_dataset, write_mesh_dataset, write_rendered_dataset

    # The rich bar below replaces Ray Data's progress bars and per-dataset log lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    console.print(f"{'importing' if rendered else 'rendering'} {what} -> {out}")
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("objects", total=total)

        def on_shard(shard: dict[str, Any]) -> None:
            for skip in shard["skipped"]:
                console.print(f"skipped {skip['source']}: {skip['reason']}", markup=False, highlight=False)
            progress.advance(task, len(shard["object_ids"]) + len(shard["skipped"]))

        if meshes:
            summary = write_mesh_dataset(cfg, root, files, folders, out, on_shard)
        elif rendered:
            on_shard({"object_ids": [], "skipped": skipped})
            summary = write_rendered_dataset(cfg, root, folders, skipped, out, on_shard)
        else:
            summary = write_dataset(cfg, out, count, start_id, on_shard)

    skips = f", {summary['skipped']} skipped (skipped.json)" if "skipped" in summary else ""
    console.print(
        f"[bold green]done[/] {summary['objects']} objects, {summary['views']} views, {summary['shards']} shards, "
        f"{summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s "
        f"({summary['objects'] / summary['seconds']:.2f} objects/s){skips}"
    )
    if sheet:
        path = write_contact_sheet(cfg, out, root)
        console.print(f"contact sheet: {path}")


def write_contact_sheet(cfg: RunConfig, out: str, root: str | None) -> str:
    """Sheet for the first object in the shards: its stored views and poses against its geometry, regenerated
    (Zeroverse) or reloaded from `root` (a mesh); an imported render has none to show, only its frusta."""
    import tempfile

    import numpy as np

    from zv_ray.data.meshes import load_object
    from zv_ray.data.parquet import read_shards
    from zv_ray.data.records import MESH_SOURCE
    from zv_ray.data.schema import ZEROVERSE_SOURCE
    from zv_ray.io import storage
    from zv_ray.render.frusta import contact_sheet, surface_points
    from zv_ray.zeroverse import generate_object

    record = next(read_shards(out))
    source = record["source"]
    if source == ZEROVERSE_SOURCE:
        obj = generate_object(int(record["seed"]), int(record["object_id"]), cfg.zeroverse)
        name, surface, points = f"object {record['object_id']}", "regenerated surface", surface_points(obj.scene)
    elif source.startswith(MESH_SOURCE):
        mesh = load_object(storage.join(root, source.removeprefix(MESH_SOURCE)), cfg.zeroverse.normalized_extent)
        name, surface, points = source, "reloaded mesh", surface_points(mesh)
    else:
        name, surface, points = source, "no surface (imported)", np.empty((0, 3))
    with tempfile.TemporaryDirectory() as tmp:
        sheet = contact_sheet(
            record["rgba"],
            record["intrinsics"],
            record["c2w"],
            points,
            Path(tmp) / "contact_sheet.png",
            title=f"{name}: stored poses vs {surface}",
        )
        return storage.upload_file(sheet, storage.join(out, "contact_sheet.png"))
