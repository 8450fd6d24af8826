"""`zv-ray eval` end to end: load a checkpoint, render the objects under the protocol, score, report, log.

    zv-ray eval --checkpoint outputs/runs/tiny --objects ../shared/eval/gso
    zv-ray eval --checkpoint outputs/runs/tiny --objects ../shared/eval/gso --zeroverse 8 --attach

Writes OUT/results.json, OUT/results.csv, OUT/table.txt and OUT/grids/<suite>/<object>.png, prints one
table per suite and logs it all to MLflow.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from zv_ray.config.base import config_hash
from zv_ray.eval.evaluate import eval_mode, evaluate_object, load_lpips_or_reason, summarize
from zv_ray.data.meshes import UpAxis
from zv_ray.eval.loading import LoadedModel
from zv_ray.eval.prepare import EvalObject, iter_real_objects, iter_zeroverse_objects
from zv_ray.eval.protocol import EvalProtocol, heldout_cameras
from zv_ray.eval.report import Scores, comparison_grid, results_table, write_results
from zv_ray.tracking import log_evaluation
from zv_ray.render.renderer import Renderer


@dataclass
class EvalOutcome:
    suites: dict[str, list[Scores]]  # suite -> per-object scores
    lpips_reason: str | None  # why LPIPS is n/a, if it is
    out_dir: Path
    tracking_uri: str
    mlflow_run_id: str


def metric_safe(name: str) -> str:
    """A name reduced to the characters MLflow metric keys allow."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"


def run_evaluation(
    loaded: LoadedModel,
    *,
    objects_dir: Path | None,
    zeroverse: int,
    protocol: EvalProtocol,
    out_dir: Path,
    tracking_uri: str,
    attach: bool = False,
    max_objects: int | None = None,
    up: UpAxis = "auto",
    console: Console | None = None,
) -> EvalOutcome:
    import imageio.v3 as iio

    if objects_dir is None and zeroverse <= 0:
        raise ValueError("nothing to evaluate: give --objects DIR and/or --zeroverse N")
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = loaded.cfg
    device = next(loaded.model.parameters()).device
    lpips_net, lpips_reason = load_lpips_or_reason(cfg, device)
    sources: dict[str, Callable[[Renderer], Iterator[EvalObject]]] = {}
    if objects_dir is not None:
        sources[metric_safe(objects_dir.resolve().name)] = lambda r: iter_real_objects(
            objects_dir, cfg, protocol, max_objects=max_objects, up=up, renderer=r
        )
    if zeroverse > 0:
        sources["zeroverse"] = lambda r: iter_zeroverse_objects(cfg, zeroverse, protocol, renderer=r)

    suites: dict[str, list[Scores]] = {}
    artifacts: list[tuple[Path, str]] = []
    with Renderer.from_config(cfg.render) as renderer, eval_mode(loaded.model) as model:
        for suite, objects in sources.items():
            suites[suite] = []
            for obj in objects(renderer):
                result = evaluate_object(model, obj, cfg, lpips_net)
                grid = out_dir / "grids" / suite / f"{obj.name}.png"
                grid.parent.mkdir(parents=True, exist_ok=True)
                iio.imwrite(grid, comparison_grid(result.inputs, result.pred, result.target))
                artifacts.append((grid, f"grids/{suite}"))
                suites[suite].append({"object": obj.name, **result.scores()})
                lp = "n/a" if result.lpips is None else f"{result.lpips:.4f}"
                console.print(f"  {suite}  {obj.name}  PSNR {result.psnr:.2f}  SSIM {result.ssim:.4f}  LPIPS {lp}  "
                              f"(white {result.white['psnr']:.2f}, margin {result.margin:+.2f} dB)")

    num_test = len(heldout_cameras(protocol, cfg.train.resolution)[0])
    text = Console(file=io.StringIO(), record=True, width=160)
    for suite, rows in suites.items():
        title = (f"{suite}: {len(rows)} objects, {protocol.num_inputs} input views, {num_test} test views, "
                 f"{cfg.train.resolution} px, checkpoint step {loaded.step}")
        for target in (console, text):
            target.print(results_table(title, rows))
    if lpips_reason:
        for target in (console, text):
            target.print(f"LPIPS n/a: {lpips_reason}", soft_wrap=True)
    table_path = out_dir / "table.txt"
    table_path.write_text(text.export_text())

    params = {
        "checkpoint": str(loaded.path), "checkpoint_step": str(loaded.step),
        "objects": str(objects_dir.resolve()) if objects_dir else "", "max_objects": str(max_objects),
        "zeroverse_objects": str(zeroverse), "zeroverse_first_id": str(cfg.data.val_first_object_id),
        "zeroverse_config_hash": config_hash(cfg.data.val_zeroverse),
        "resolution": str(cfg.train.resolution), "render_resolution": str(cfg.render.resolution),
        "num_test_views": str(num_test), "lpips": "vgg" if lpips_net is not None else f"n/a: {lpips_reason}",
        **protocol.params(),
    }
    result_files = write_results(out_dir, suites, params)
    metrics: dict[str, float] = {}
    for suite, rows in suites.items():
        metrics.update(summarize(rows, suite))
        for row in rows:
            name = metric_safe(row["object"])
            metrics.update({f"{suite}/objects/{name}/{k}": v for k, v in row.items() if k != "object" and v is not None})
    run_id = log_evaluation(
        tracking_uri, cfg, params=params, metrics=metrics, step=loaded.step, attach=attach,
        artifacts=[(p, "") for p in (*result_files, table_path)] + artifacts,
    )
    return EvalOutcome(suites, lpips_reason, out_dir, tracking_uri, run_id)
