"""The `zv-ray` command line. Each command lives beside its capability (zv_ray/<capability>/cli.py).

    zv-ray generate --n 16 --out outputs/objects
    zv-ray dataset --n 1000 --out outputs/dataset
    zv-ray train configs/tiny.yaml
    zv-ray sweep configs/sweeps/augmentation_tiny.yaml
    zv-ray eval --checkpoint CKPT --objects ../shared/eval/gso
    zv-ray demo
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LRM-Zero at cluster scale on Ray.")

from zv_ray.zeroverse.cli import generate  # noqa: E402

app.command("generate")(generate)


if __name__ == "__main__":
    app()
