"""`zv-ray export DATASET --out DIR`: a Parquet dataset -> the official Zeroverse / GS-LRM folder layout.

    zv-ray export outputs/dataset --out outputs/dataset_folders      # DIR/<object id>/images/NNN.png + opencv_cameras.json

`zv-ray dataset --rendered DIR` reads the layout back (zv_ray/data/layout.py).
"""

from __future__ import annotations

import typer


def export(
    dataset: str = typer.Argument(..., help="A dataset folder (or s3:// prefix) of Parquet shards, or one shard"),
    out: str = typer.Option(..., "--out", help="New folder or s3:// / gs:// prefix for the object folders"),
) -> None:
    """Write each object of a dataset as a folder of PNG views and opencv_cameras.json (the official layout)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from zv_ray.data.layout import write_object_folder
    from zv_ray.data.parquet import open_shard, read_shards, valid_shards
    from zv_ray.io import storage

    shards = valid_shards(dataset)  # a missing or corrupt dataset is named before anything is written
    out = storage.absolute(out)
    if storage.is_file(out) or storage.list_files(out) or storage.list_folders(out):
        raise FileExistsError(f"--out {out} is not an empty folder; export into a new one")
    storage.check_writable(out)
    total = sum(open_shard(p).metadata.num_rows for p in shards)
    console = Console()
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("objects", total=total)
        for record in read_shards(dataset):
            write_object_folder(record, storage.join(out, f"{int(record['object_id']):012d}"))
            progress.advance(task)
    console.print(f"[bold green]done[/] {total} objects -> {out} (one folder per object id: images/ + opencv_cameras.json)")
