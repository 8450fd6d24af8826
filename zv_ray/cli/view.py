"""`zv-ray view`: look at generated objects, rendered datasets and reconstructions in a web browser.

    zv-ray view --generate 3 [--seed 0] [--config configs/tiny.yaml]
    zv-ray view --dataset outputs/dataset
    zv-ray view --checkpoint outputs/demo/runs/<run> --objects ../shared/eval/gso
    zv-ray view --checkpoint CKPT --generate 4          # held-out ids from the checkpoint's data.val_first_object_id
    zv-ray view outputs/recon/gaussians.ply
    zv-ray view --generate 3 --screenshot view.png      # headless: save what a browser shows, then exit

Serves on 127.0.0.1:8080; on a cluster node forward it: `ssh -L 8080:127.0.0.1:8080 NODE`, open http://127.0.0.1:8080.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# Bad configs, checkpoints, shards and .ply files (ValueError, ConfigError), missing paths and a taken port (OSError).
_USER_ERRORS = (ValueError, OSError)


def view(
    ply: Optional[Path] = typer.Argument(None, help="A 3DGS .ply of Gaussians to show"),
    generate: Optional[int] = typer.Option(None, "--generate", min=1, help="Show N Zeroverse objects generated on the fly"),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Show a Parquet dataset's objects, views and cameras"),
    objects: Optional[Path] = typer.Option(None, "--objects", help="Show real meshes (sub-folders with model.obj or .glb)"),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Reconstruct the objects with this checkpoint (a file, checkpoint or run folder)"
    ),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Generator seed (default: the config's seed)"),
    first_id: Optional[int] = typer.Option(
        None, "--first-id", min=0, help="First generated id (default: 0; with a checkpoint its data.val_first_object_id)"
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Run config YAML for --generate (default: the checkpoint's, else the defaults)"
    ),
    input_views: Optional[int] = typer.Option(None, "--input-views", min=1, help="Input views per object (default: the checkpoint's train setting)"),
    test_views: Optional[int] = typer.Option(None, "--test-views", min=1, help="Score an evenly spread subset of the test rig"),
    up: str = typer.Option("auto", "--up", help="Mesh up axis for --objects: auto (glTF +Y, else +Z), z or y"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0 exposes it to the network)"),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to serve on (0: any free port)"),
    screenshot: Optional[Path] = typer.Option(
        None, "--screenshot", help="Save what headless Chromium shows to this PNG, then exit"
    ),
) -> None:
    """A web viewer: Zeroverse objects, dataset views with camera frusta, predicted Gaussians beside the ground truth."""
    from rich.console import Console

    from zv_ray.view.browser import BrowserError

    console = Console(stderr=True)

    def fail(err: Exception) -> typer.Exit:
        console.print(f"[bold red]error:[/] {err}", soft_wrap=True, highlight=False)
        return typer.Exit(1)

    try:
        what = {"ply": ply, "generate": generate, "dataset": dataset, "objects": objects}
        viewer = _make_viewer(what, checkpoint, seed=seed, first_id=first_id, config=config, views=input_views,
                              test_views=test_views, up=up, device=device)
        server = viewer.serve(host, port)
    except _USER_ERRORS as err:
        raise fail(err) from None
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{server.get_port()}"
    try:
        if screenshot is not None:
            _save_screenshot(viewer, url, screenshot, console)
            return
        count = len(viewer.source.labels)
        console.print(f"zv-ray viewer at [bold]{url}[/] ({count} object{'s' * (count != 1)}); Ctrl+C stops it", soft_wrap=True)
        _wait_forever()
    except BrowserError as err:
        raise fail(err) from None
    finally:
        viewer.close()


def _make_viewer(what: dict, checkpoint: Path | None, *, seed, first_id, config, views, test_views, up, device):
    """A viewer of the one source `what` names, with a predictor when a checkpoint is given."""
    from zv_ray.config import load_config
    from zv_ray.view import sources
    from zv_ray.view.app import Viewer

    flags = {"ply": "a .ply", "generate": "--generate", "dataset": "--dataset", "objects": "--objects"}
    chosen = [flags[k] for k, v in what.items() if v is not None]
    if len(chosen) != 1:
        given = " and ".join(chosen) or "nothing"
        raise ValueError(f"got {given} to show: give exactly one of GAUSSIANS.ply, --generate N, --dataset DIR, --objects DIR")
    if up not in ("auto", "z", "y"):
        raise ValueError(f"--up must be auto, z or y, got {up!r}")
    if what["ply"] is not None:
        if checkpoint is not None:
            raise ValueError("a .ply already holds Gaussians: --checkpoint goes with --generate, --dataset or --objects")
        return Viewer(sources.PlyFile(what["ply"]), "3DGS .ply")
    predictor = _predictor(checkpoint, views, test_views, device) if checkpoint is not None else None
    cfg = load_config(config) if config is not None else (predictor.loaded.cfg if predictor else load_config(None))
    kind = "reconstruction" if predictor else "Zeroverse"
    if what["generate"] is not None:
        start = first_id if first_id is not None else (cfg.data.val_first_object_id if predictor else 0)
        source = sources.GeneratedObjects(cfg.zeroverse, cfg.seed if seed is None else seed, start, what["generate"], predictor)
        return Viewer(source, f"{kind}: generated objects")
    if what["dataset"] is not None:
        return Viewer(sources.DatasetObjects(what["dataset"], predictor), f"{kind}: dataset {what['dataset'].name}")
    source = sources.RealObjects(what["objects"], up, predictor, cfg.zeroverse.normalized_extent)
    return Viewer(source, f"{kind}: {what['objects'].name}")


def _predictor(checkpoint: Path, views: int | None, test_views: int | None, device: str):
    from zv_ray.eval.loading import load_model, pick_device
    from zv_ray.eval.protocol import EvalProtocol
    from zv_ray.view.predictor import Predictor

    loaded = load_model(checkpoint, pick_device(device))
    return Predictor(loaded, EvalProtocol.for_config(loaded.cfg, num_inputs=views, num_test_views=test_views))


def _save_screenshot(viewer, url: str, path: Path, console) -> None:
    from PIL import Image

    from zv_ray.view.browser import HeadlessChromium, wait_for_client

    with HeadlessChromium(url) as browser:
        wait_for_client(viewer.server, browser.timeout)
        _canvas, fraction = browser.wait_for_content()
        Image.fromarray(browser.screenshot()).save(path)
    console.print(f"screenshot: {path} ({fraction:.0%} of the canvas centre shows content)", soft_wrap=True)


def _wait_forever() -> None:
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
