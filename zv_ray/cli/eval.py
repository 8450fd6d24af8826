"""`zv-ray eval` and `zv-ray reconstruct` (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

_USER_ERRORS = (ValueError, FileNotFoundError)


def evaluate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="checkpoint.pt, a checkpoint folder or a run folder (local, s3://, gs://)"),
    objects: Optional[Path] = typer.Option(None, "--objects", help="Folder of real objects (sub-folders with model.obj or .glb)"),
    zeroverse: int = typer.Option(0, "--zeroverse", min=0, help="Also score N held-out Zeroverse objects (ids from data.val_first_object_id)"),
    input_views: Optional[int] = typer.Option(None, "--input-views", min=1, help="Input views per object (default: the checkpoint's train.num_input_views)"),
    test_views: Optional[int] = typer.Option(None, "--test-views", min=1, help="Score an evenly spread subset of the test rig"),
    max_objects: Optional[int] = typer.Option(None, "--max-objects", min=1, help="Only the first K objects (sorted by name)"),
    out: Path = typer.Option(Path("outputs/eval"), "--out", help="Folder for results.json/csv, table.txt and grids"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: the run config's)"),
    attach: bool = typer.Option(False, "--attach", help="Log into the training run instead of a new eval run"),
    up: str = typer.Option("auto", "--up", help="Mesh up axis: auto (glTF +Y, else +Z), z or y"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Score a checkpoint on real scanned objects (and held-out Zeroverse): PSNR / SSIM / LPIPS per object."""
    from rich.console import Console

    from zv_ray.eval.loading import load_model, pick_device
    from zv_ray.eval.protocol import EvalProtocol
    from zv_ray.eval.run import run_evaluation
    from zv_ray.tracking import resolve_tracking_uri

    console = Console()
    if up not in ("auto", "z", "y"):
        raise typer.BadParameter(f"--up must be auto, z or y, got {up!r}")
    try:
        loaded = load_model(checkpoint, pick_device(device))
        outcome = run_evaluation(
            loaded, objects_dir=objects, zeroverse=zeroverse, out_dir=out, attach=attach, max_objects=max_objects, up=up,
            protocol=EvalProtocol.for_config(loaded.cfg, num_inputs=input_views, num_test_views=test_views),
            tracking_uri=tracking_uri or resolve_tracking_uri(loaded.cfg), console=console,
        )
    except _USER_ERRORS as err:
        console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"results: {outcome.out_dir / 'results.json'}  grids: {outcome.out_dir / 'grids'}", soft_wrap=True)
    console.print(f"MLflow: {outcome.tracking_uri}  run id {outcome.mlflow_run_id}", soft_wrap=True)


def reconstruct(
    images: list[Path] = typer.Argument(..., help="The posed input images, one per model input view"),
    cameras: Path = typer.Option(..., "--cameras", help="Camera JSON (see docs/evaluation.md), or an opencv_cameras.json"),
    checkpoint: str = typer.Option(..., "--checkpoint", help="checkpoint.pt, a checkpoint folder or a run folder (local, s3://, gs://)"),
    out: Path = typer.Option(..., "--out", help="Folder for gaussians.ply and turntable.mp4"),
    frames: int = typer.Option(48, "--frames", min=1, help="Turntable frames (one full turn)"),
    elevation: float = typer.Option(20.0, "--elevation", help="Turntable camera elevation in degrees"),
    radius: Optional[float] = typer.Option(None, "--radius", help="Turntable camera distance (default: the inputs' mean)"),
    fps: int = typer.Option(24, "--fps", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
) -> None:
    """Reconstruct 3D Gaussians from your own posed images: a 3DGS .ply and a turntable video."""
    from rich.console import Console

    from zv_ray.eval.evaluate import eval_mode
    from zv_ray.eval.loading import load_model, pick_device
    from zv_ray.eval.reconstruct import load_posed_views
    from zv_ray.eval.turntable import render_turntable, write_video
    from zv_ray.export.ply import save_ply
    from zv_ray.inference.predict import predict_gaussians

    console = Console()
    try:
        loaded = load_model(checkpoint, pick_device(device))
        cfg = loaded.cfg
        views = load_posed_views(images, cameras, cfg.train.num_input_views, cfg.train.resolution)
    except _USER_ERRORS as err:  # CameraFileError is a ValueError
        console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
        raise typer.Exit(1) from None
    with eval_mode(loaded.model) as model:
        gaussians = predict_gaussians(model, views.to(next(model.parameters()).device), cfg)
    out.mkdir(parents=True, exist_ok=True)
    ply = out / "gaussians.ply"
    save_ply(ply, gaussians)
    video = write_video(out / "turntable.mp4", render_turntable(
        gaussians, num_frames=frames, elevation_deg=elevation, fov_deg=cfg.render.fov_deg, resolution=cfg.train.resolution,
        radius=radius or float(views.c2w[0, :, :3, 3].norm(dim=-1).mean()), background=cfg.train.background,
    ), fps=fps)
    console.print(f"Gaussians: {ply} ({gaussians.num} splats)\nturntable: {video}", soft_wrap=True)
