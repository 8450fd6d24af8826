"""Compare a sweep's trials from MLflow: a table, PSNR-vs-perceptual-weight and curve plots (PNG artifacts).

    zv-ray compare augmentation-tiny              # by sweep name (newest parent run of that name)
    zv-ray compare 3f2a...e9 --tracking-uri sqlite:///outputs/runs/mlflow.db
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from zv_ray.tracking import (
    DIVERGED_TAG, METRIC_TAG, MODE_TAG, OUTCOME_TAG, PARAM_PREFIX, ROLE_TAG, SPACE_TAG, SWEEP_TAG, TRIAL_TAG, child_runs,
)

PERCEPTUAL_KEY = "loss.perceptual_weight"
AUGMENTATION_KEYS = ("zeroverse.p_heightfield", "zeroverse.p_boolean", "zeroverse.p_wireframe")


@dataclass
class TrialRow:
    run_id: str
    trial_id: str
    values: dict[str, str]  # space key -> sampled value (bundle keys hold their label)
    params: dict[str, str]  # the trial's full flattened config
    best: float | None  # best value of the sweep metric over the run
    white: float | None  # the all-white image's value of that metric on the same views (None if not logged)
    final_loss: float | None
    steps: int | None  # last logged step
    skipped: int | None
    diverged: bool
    outcome: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    metric_curve: list[tuple[int, float]] = field(default_factory=list)

    def setting(self, keys: list[str]) -> str:
        """Label of everything the trial varies besides the perceptual weight (augmentation, clipping, ...)."""
        parts = [f"{k}={self.values.get(k)}" for k in keys if k != PERCEPTUAL_KEY]
        if not parts:
            parts = [f"{k.split('.p_')[-1]} {self.params.get(k)}" for k in AUGMENTATION_KEYS]
        return ", ".join(parts)


@dataclass
class Comparison:
    sweep: str
    parent_run_id: str
    metric: str
    mode: str
    space_keys: list[str]
    rows: list[TrialRow]
    files: list[Path] = field(default_factory=list)


def find_parent(client, ref: str):
    """A parent run id, or the newest parent run of a sweep with that name."""
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        run = client.get_run(ref)
        if run.data.tags.get(ROLE_TAG) != "parent":
            raise LookupError(f"run {ref} is not a sweep's parent run (no {ROLE_TAG}=parent tag)")
        return run
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exp_ids, filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1000)
    for run in parents:
        if run.data.tags.get(SWEEP_TAG) == ref:
            return run
    known = sorted({r.data.tags.get(SWEEP_TAG, "?") for r in parents})
    raise LookupError(f"no sweep named {ref!r} in this MLflow store; known sweeps: {', '.join(known) or 'none'} "
                      "(pass --tracking-uri if the sweep used another store)")


def _curve(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key) if math.isfinite(m.value))


def white_key(metric: str) -> str:
    """The all-white baseline logged beside an evaluation metric: 'val/psnr' -> 'val/white_psnr'."""
    prefix, _, name = metric.rpartition("/")
    return f"{prefix}/white_{name}" if prefix else f"white_{name}"


def load_comparison(tracking_uri: str, ref: str) -> Comparison:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = find_parent(client, ref)
    tags = parent.data.tags
    metric, mode = tags.get(METRIC_TAG, "val/psnr"), tags.get(MODE_TAG, "max")
    space_keys = [k for k in tags.get(SPACE_TAG, "").split(",") if k]
    rows = []
    for run in child_runs(tracking_uri, parent.info.experiment_id, parent.info.run_id):
        loss_curve, metric_curve = _curve(client, run.info.run_id, "train/loss"), _curve(client, run.info.run_id, metric)
        values = [v for _, v in metric_curve]
        skipped = run.data.metrics.get("train/skipped_steps")
        white = run.data.metrics.get(white_key(metric))  # the fixed validation set: the same value at every eval
        rows.append(TrialRow(
            run_id=run.info.run_id,
            trial_id=run.data.tags.get(TRIAL_TAG, "?"),
            values={k: run.data.params.get(f"{PARAM_PREFIX}{k}", "?") for k in space_keys},
            params=dict(run.data.params),
            best=(max(values) if mode == "max" else min(values)) if values else None,
            white=white,
            final_loss=loss_curve[-1][1] if loss_curve else None,
            steps=loss_curve[-1][0] if loss_curve else None,
            skipped=int(skipped) if skipped is not None else None,
            diverged=run.data.tags.get(DIVERGED_TAG) == "yes",
            outcome=run.data.tags.get(OUTCOME_TAG, run.info.status.lower()),
            loss_curve=loss_curve,
            metric_curve=metric_curve,
        ))
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r.best is None, sign * (r.best or 0.0), r.trial_id))
    return Comparison(tags.get(SWEEP_TAG, "?"), parent.info.run_id, metric, mode, space_keys, rows)


def table(comp: Comparison):
    from rich.table import Table

    t = Table(title=f"sweep {comp.sweep} (parent run {comp.parent_run_id}): {len(comp.rows)} trials, "
                    f"best {comp.metric} first")
    cols = ["trial", *comp.space_keys, f"best {comp.metric}", "white", "best - white", "final loss", "steps", "skipped",
            "diverged", "outcome"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("trial", "outcome") else "right")

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in comp.rows:
        margin = r.best - r.white if r.best is not None and r.white is not None else None
        t.add_row(r.trial_id, *(r.values[k] for k in comp.space_keys), num(r.best, ".2f"), num(r.white, ".2f"),
                  num(margin, "+.2f"), num(r.final_loss, ".4f"),
                  num(r.steps, "d"), num(r.skipped, "d"), "yes" if r.diverged else "no", r.outcome)
    return t


def plot(comp: Comparison, out_dir: Path) -> list[Path]:
    """psnr_vs_perceptual_weight.png (one line per setting; bars when the weight is fixed) and curves.png
    (loss and metric per trial)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    by_setting: dict[str, list[TrialRow]] = {}
    for r in comp.rows:
        by_setting.setdefault(r.setting(comp.space_keys), []).append(r)

    weights = {r.params.get(PERCEPTUAL_KEY) for r in comp.rows}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(weights) == 1:  # one weight (an augmentation ablation): a bar per trial says more than a column of dots
        scored = sorted((r for r in comp.rows if r.best is not None), key=lambda r: r.best)
        repeats = len(by_setting) < len(comp.rows)  # num_samples > 1: tell repeats of a setting apart
        labels = [r.setting(comp.space_keys) + (f" {r.trial_id}" if repeats else "") for r in scored]
        bars = ax.bar(labels, [r.best for r in scored], color=["tab:red" if r.diverged else "tab:blue" for r in scored])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        if scored:
            ax.set_ylim(scored[0].best - 1, scored[-1].best + 0.5)
        ax.set_xlabel(f"{PERCEPTUAL_KEY} = {weights.pop()} (red: diverged)")
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    else:
        for label, rows in sorted(by_setting.items()):
            pts = sorted(
                (float(r.params.get(PERCEPTUAL_KEY, "nan")), r.best, r.diverged) for r in rows if r.best is not None
            )
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
            diverged = [p for p in pts if p[2]]
            if diverged:
                ax.plot([p[0] for p in diverged], [p[1] for p in diverged], "x", color=line.get_color(), markersize=12)
        ax.set_xlabel(f"{PERCEPTUAL_KEY} (x: diverged)")
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    psnr_png = _save(fig, out_dir / "psnr_vs_perceptual_weight.png")

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in comp.rows:
        label = f"{r.trial_id} {r.setting(comp.space_keys)}" + (" (diverged)" if r.diverged else "")
        if r.loss_curve:
            ax_loss.plot(*zip(*r.loss_curve), label=label)
        if r.metric_curve:
            ax_metric.plot(*zip(*r.metric_curve), "o-", label=label)
    ax_loss.set(xlabel="step", ylabel="train/loss", title="training loss", yscale="log")
    ax_metric.set(xlabel="step", ylabel=comp.metric, title=f"{comp.metric} on held-out objects")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=6)
    return [psnr_png, _save(fig, out_dir / "curves.png")]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(tracking_uri: str, ref: str, out_dir: Path | None = None, *, log_artifacts: bool = True) -> Comparison:
    """Load the trials, write table.txt and the plots under out_dir (outputs/compare/<sweep>) and, by
    default, log them as artifacts of the parent run under compare/."""
    from mlflow.tracking import MlflowClient
    from rich.console import Console

    comp = load_comparison(tracking_uri, ref)
    out_dir = out_dir or Path("outputs/compare") / comp.sweep
    files = plot(comp, out_dir)
    text = Console(record=True, width=200, file=io.StringIO())
    text.print(table(comp))
    (out_dir / "table.txt").write_text(text.export_text())
    comp.files = [out_dir / "table.txt", *files]
    if log_artifacts:
        client = MlflowClient(tracking_uri)
        for path in comp.files:
            client.log_artifact(comp.parent_run_id, str(path), "compare")
    return comp
