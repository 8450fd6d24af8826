"""The `zv-ray` command line: the top layer. Each command is a module here (zv_ray/cli/<command>.py) over the library.

    zv-ray generate --n 16 --out outputs/objects
    zv-ray dataset --n 1000 --out outputs/dataset   |   --meshes DIR   |   --rendered DIR
    zv-ray export outputs/dataset --out outputs/dataset_folders
    zv-ray train configs/tiny.yaml
    zv-ray sweep configs/sweeps/augmentation_tiny.yaml
    zv-ray eval --checkpoint CKPT --objects ../shared/eval/gso
    zv-ray reconstruct a.png b.png c.png d.png --cameras cameras.json --checkpoint CKPT --out OUT
    zv-ray view --generate 3   |   zv-ray view --checkpoint CKPT --objects ../shared/eval/gso
    zv-ray doctor --config configs/paper.yaml --cluster
    zv-ray audit outputs/runs/tiny [--against outputs/runs/tiny-again]
    zv-ray demo
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LRM-Zero at cluster scale on Ray.")

from zv_ray.cli.generate import generate  # noqa: E402

app.command("generate")(generate)

from zv_ray.cli.dataset import dataset  # noqa: E402

app.command("dataset")(dataset)

from zv_ray.cli.export import export  # noqa: E402

app.command("export")(export)

from zv_ray.cli.train import train  # noqa: E402

app.command("train")(train)

from zv_ray.cli.sweep import compare, sweep  # noqa: E402

app.command("sweep")(sweep)
app.command("compare")(compare)

from zv_ray.cli.eval import evaluate, reconstruct  # noqa: E402

app.command("eval")(evaluate)
app.command("reconstruct")(reconstruct)

from zv_ray.cli.doctor import doctor  # noqa: E402

app.command("doctor")(doctor)

from zv_ray.cli.audit import audit  # noqa: E402

app.command("audit")(audit)

from zv_ray.cli.view import view  # noqa: E402

app.command("view")(view)

from zv_ray.cli.demo import demo  # noqa: E402

app.command("demo")(demo)


def main() -> None:
    """Entry point: bad input (config, paths, weights, shards, camera files) is one clear line, not a traceback."""
    from zv_ray.cluster.doctor import DoctorFailed
    from zv_ray.cluster.resources import InsufficientResources
    from zv_ray.config import ConfigError
    from zv_ray.data.camera_file import CameraFileError
    from zv_ray.data.parquet import CorruptShardError, NothingRendered
    from zv_ray.io.storage import StorageError
    from zv_ray.losses.perceptual import PerceptualWeightsMissing
    from zv_ray.splat.backend import RasterizerUnavailable
    from zv_ray.train.audit import AuditError

    user_errors = (ConfigError, CorruptShardError, CameraFileError, PerceptualWeightsMissing, DoctorFailed, StorageError,
                   RasterizerUnavailable, InsufficientResources, NothingRendered, FileExistsError, FileNotFoundError,
                   LookupError, AuditError)
    try:
        app()
    except user_errors as err:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {err}", soft_wrap=True, markup=True, highlight=False)
        raise SystemExit(2) from None

