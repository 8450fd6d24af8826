"""Evaluation outputs: the per-object table (like the paper's), results.json / results.csv, comparison grids."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from torch import Tensor

from zv_ray.eval.evaluate import MARGIN, WHITE, mean_scores
from zv_ray.inference.views import uint8_images

Scores = dict[str, Any]  # {"object": name, "psnr": float, ..., "white_psnr": float, ..., "psnr_over_white": float}
_COLUMNS = (
    ("psnr", "PSNR ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.4f}"), ("lpips", "LPIPS ↓", "{:.4f}"),
    (f"{WHITE}_psnr", "white PSNR", "{:.2f}"), (f"{WHITE}_ssim", "white SSIM", "{:.4f}"),
    (f"{WHITE}_lpips", "white LPIPS", "{:.4f}"), (MARGIN, "PSNR - white", "{:+.2f}"),
)
_GUTTER = 200  # light grey border around every tile, so white backgrounds stay apart


def results_table(title: str, rows: list[Scores]) -> Table:
    """Rich table: one row per object, then the mean, each beside the all-white image's scores and the PSNR
    margin over it; a missing metric (LPIPS without VGG weights) shows 'n/a'."""
    table = Table(title=title)
    table.add_column("Object")
    for _, header, _ in _COLUMNS:
        table.add_column(header, justify="right")
    def cells(scores: Scores) -> list[str]:
        return [fmt.format(scores[key]) if scores.get(key) is not None else "n/a" for key, _, fmt in _COLUMNS]

    for row in rows:
        table.add_row(row["object"], *cells(row))
    table.add_section()
    table.add_row("mean", *cells(mean_scores(rows)), style="bold")
    return table


def write_results(out_dir: Path, suites: dict[str, list[Scores]], meta: dict[str, Any]) -> list[Path]:
    """results.json ({meta, suites: {suite: {objects, mean}}}) and results.csv (suite, object, metrics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "suites": {s: {"objects": rows, "mean": mean_scores(rows)} for s, rows in suites.items()}}
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2))
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["suite", "object", *[k for k, _, _ in _COLUMNS]])
        for suite, rows in suites.items():
            for row in [*rows, {"object": "mean", **mean_scores(rows)}]:
                writer.writerow([suite, row["object"], *["" if row.get(k) is None else row[k] for k, _, _ in _COLUMNS]])
    return [json_path, csv_path]


def comparison_grid(
    inputs: Tensor,  # [Vin, 3, H, W] in [0, 1]
    pred: Tensor,  # [Vt, 3, H, W]
    target: Tensor,  # [Vt, 3, H, W]
    columns: int = 8,
) -> np.ndarray:  # [rows * (H + 2), columns * (W + 2), 3] uint8
    """Input views on top; then for every `columns` test views a row of predictions over a row of ground truth."""
    def tiles(views: Tensor) -> list[np.ndarray]:
        return [np.pad(v, ((1, 1), (1, 1), (0, 0)), constant_values=_GUTTER) for v in uint8_images(views)]

    def row(cells: list[np.ndarray]) -> np.ndarray:
        blank = np.full_like(cells[0], 255)
        return np.concatenate(cells + [blank] * (columns - len(cells)), axis=1)

    ins, preds, targets = tiles(inputs), tiles(pred), tiles(target)
    rows = [row(ins[i : i + columns]) for i in range(0, len(ins), columns)]
    for i in range(0, len(preds), columns):
        rows += [row(preds[i : i + columns]), row(targets[i : i + columns])]
    return np.concatenate(rows, axis=0)
