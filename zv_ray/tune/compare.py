"""Compare a sweep's trials from MLflow: a table, the sweep metric against each key the sweep varies, curves,
every trial's predictions on the same held-out objects side by side, and per arm (the trials that differ only by
seed) the mean over seeds and objects with its 95% interval and the paired difference from the reference arm
(tables and PNG artifacts on the parent run).

    zv-ray compare augmentation-tiny              # by sweep name (newest parent run of that name)
    zv-ray compare 3f2a...e9 --tracking-uri sqlite:///outputs/runs/mlflow.db
"""

from __future__ import annotations

import io
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zv_ray.eval.evaluate import SCORE_KEYS
from zv_ray.eval.object_scores import ARTIFACT_DIR, ObjectScores
from zv_ray.eval.predictions import Predictions
from zv_ray.tracking import (
    DIVERGED_TAG, METRIC_TAG, MODE_TAG, OUTCOME_TAG, PARAM_PREFIX, REFERENCE_TAG, SPACE_TAG, SWEEP_TAG, TRIAL_TAG,
    child_runs, download_artifact, log_artifact, metric_history, sweep_parent,
)
from zv_ray.tune.arms import ArmRun, ArmStats, arm_stats

# The suites a training run scores per object: the real objects (train.eval_objects) and the fixed held-out
# Zeroverse set (data.num_val_objects, data.val_zeroverse).
SUITES = {"gso": "real objects", "val": "held-out Zeroverse"}


@dataclass
class TrialRow:
    run_id: str
    trial_id: str
    seed: int | None  # the run's seed (None: not logged)
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
    scores: dict[str, ObjectScores] = field(default_factory=dict)  # suite -> per-object scores, final evaluation

    def setting(self, keys: list[str], leave_out: str | None = None) -> str:
        """Label of the values this trial sampled for `keys` (but `leave_out`): "augmentation=all, train.lr=0.001"."""
        return ", ".join(f"{k}={self.values.get(k)}" for k in keys if k != leave_out)


@dataclass
class Comparison:
    sweep: str
    parent_run_id: str
    metric: str
    mode: str
    space_keys: list[str]
    rows: list[TrialRow]
    reference: str | None = None  # the reference arm's label (TrialRow.setting), None: no paired differences
    files: list[Path] = field(default_factory=list)

    def score(self) -> tuple[str, str]:
        """(per-object score, its mode) for the intervals: the sweep metric's own (val/psnr -> psnr) when it is
        one of the evaluation's scores, else PSNR."""
        name = self.metric.rpartition("/")[2]
        return (name, self.mode) if name in SCORE_KEYS else ("psnr", "max")

    def arm_stats(self, suite: str) -> list[ArmStats]:
        """Every arm's mean and paired difference from the reference on one suite (empty: no per-object scores)."""
        name, mode = self.score()
        runs = []
        for r in self.rows:
            if suite in r.scores and r.seed is not None:
                values = {o: v.get(name) for o, v in r.scores[suite].objects.items()}
                finite = {o: float(v) for o, v in values.items() if v is not None and math.isfinite(v)}
                runs.append(ArmRun(r.setting(self.space_keys), r.seed, finite, r.diverged))
        return arm_stats(runs, self.reference, mode) if runs else []

    def suites(self) -> dict[str, list[ArmStats]]:
        """suite -> its arm statistics, for the suites the trials scored object by object."""
        return {suite: stats for suite in SUITES if (stats := self.arm_stats(suite))}


def _curve(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(step, value) for step, value in metric_history(tracking_uri, run_id, key) if math.isfinite(value)]


def white_key(metric: str) -> str:
    """The all-white baseline logged beside an evaluation metric: 'val/psnr' -> 'val/white_psnr'."""
    prefix, _, name = metric.rpartition("/")
    return f"{prefix}/white_{name}" if prefix else f"white_{name}"


def fetch_scores(tracking_uri: str, run_id: str, tmp: Path) -> dict[str, ObjectScores]:
    """suite -> a trial's per-object scores at its last evaluation (no entry: the suite was not evaluated)."""
    from zv_ray.eval.object_scores import load_object_scores

    found = {}
    for suite in SUITES:
        if path := download_artifact(tracking_uri, run_id, f"{ARTIFACT_DIR}/{suite}.json", tmp / run_id):
            found[suite] = load_object_scores(path)
    return found


def load_comparison(tracking_uri: str, ref: str) -> Comparison:
    parent = sweep_parent(tracking_uri, ref)
    tags = parent.data.tags
    metric, mode = tags.get(METRIC_TAG, "val/psnr"), tags.get(MODE_TAG, "max")
    space_keys = [k for k in tags.get(SPACE_TAG, "").split(",") if k]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in child_runs(tracking_uri, parent.info.experiment_id, parent.info.run_id):
            rows.append(trial_row(tracking_uri, run, metric, mode, space_keys, Path(tmp)))
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r.best is None, sign * (r.best or 0.0), r.trial_id))
    return Comparison(tags.get(SWEEP_TAG, "?"), parent.info.run_id, metric, mode, space_keys, rows,
                      reference=tags.get(REFERENCE_TAG))


def trial_row(tracking_uri: str, run, metric: str, mode: str, space_keys: list[str], tmp: Path) -> TrialRow:
    """One trial's MLflow run as a row: what it sampled, its curves, its best metric, its per-object scores."""
    loss_curve = _curve(tracking_uri, run.info.run_id, "train/loss")
    metric_curve = _curve(tracking_uri, run.info.run_id, metric)
    values = [v for _, v in metric_curve]
    skipped = run.data.metrics.get("train/skipped_steps")
    seed = run.data.params.get("seed")
    return TrialRow(
        run_id=run.info.run_id,
        trial_id=run.data.tags.get(TRIAL_TAG, "?"),
        seed=int(seed) if seed is not None else None,
        values={k: run.data.params.get(f"{PARAM_PREFIX}{k}", "?") for k in space_keys},
        params=dict(run.data.params),
        best=(max(values) if mode == "max" else min(values)) if values else None,
        white=run.data.metrics.get(white_key(metric)),  # the fixed validation set: the same value at every eval
        final_loss=loss_curve[-1][1] if loss_curve else None,
        steps=loss_curve[-1][0] if loss_curve else None,
        skipped=int(skipped) if skipped is not None else None,
        diverged=run.data.tags.get(DIVERGED_TAG) == "yes",
        outcome=run.data.tags.get(OUTCOME_TAG, run.info.status.lower()),
        loss_curve=loss_curve,
        metric_curve=metric_curve,
        scores=fetch_scores(tracking_uri, run.info.run_id, tmp),
    )


def table(comp: Comparison):
    from rich.table import Table

    t = Table(title=f"sweep {comp.sweep} (parent run {comp.parent_run_id}): {len(comp.rows)} trials, "
                    f"best {comp.metric} first")
    cols = ["trial", "seed", *comp.space_keys, f"best {comp.metric}", "white", "best - white", "final loss", "steps",
            "skipped", "diverged", "outcome"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("trial", "outcome") else "right")

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in comp.rows:
        margin = r.best - r.white if r.best is not None and r.white is not None else None
        t.add_row(r.trial_id, num(r.seed, "d"), *(r.values[k] for k in comp.space_keys), num(r.best, ".2f"),
                  num(r.white, ".2f"), num(margin, "+.2f"), num(r.final_loss, ".4f"), num(r.steps, "d"),
                  num(r.skipped, "d"), "yes" if r.diverged else "no", r.outcome)
    return t


def tables(comp: Comparison) -> list:
    """What `zv-ray compare` prints: the trial table, then an interval table per suite with per-object scores."""
    return [table(comp), *(interval_table(comp, suite, stats) for suite, stats in comp.suites().items())]


def interval_table(comp: Comparison, suite: str, stats: list[ArmStats]):
    """Per arm: runs, objects, the mean [95% interval] over seeds and objects, the paired difference from the
    reference arm [95% interval], and whether the two can be told apart."""
    from rich.table import Table

    name, mode = comp.score()
    seeds = sorted({s.mean.seeds for s in stats if s.mean})
    objects = sorted({s.objects for s in stats})
    t = Table(title=f"{comp.sweep}: {suite}/{name} on {SUITES[suite]} at each run's final evaluation, "
                    f"{'/'.join(map(str, seeds))} seeds x {'/'.join(map(str, objects))} objects per arm: mean and "
                    f"difference from the reference arm (same seed, same object) with 95% intervals over seeds and "
                    f"objects; an interval spanning 0 is no difference")
    for col in ("arm", "runs", "diverged", "objects", f"mean {name} [95%]", "- reference [95%]", "verdict"):
        t.add_column(col, justify="left" if col in ("arm", "verdict") else "right")
    for s in stats:
        t.add_row(s.arm + (" (reference)" if s.reference else ""), str(s.runs), str(s.diverged), str(s.objects),
                  s.mean.text() if s.mean else "-", s.diff.text("+.2f") if s.diff else "-", s.verdict(mode))
    return t


def plot_intervals(comp: Comparison, suite: str, stats: list[ArmStats], out_dir: Path) -> Path:
    """intervals_<suite>.png: each arm's mean with its 95% interval, and its paired difference from the reference
    arm with its interval (grey where it spans 0: not distinguishable)."""
    import matplotlib.pyplot as plt

    name, mode = comp.score()
    stats = [s for s in stats if s.mean]
    y = np.arange(len(stats))[::-1]
    fig, (ax_mean, ax_diff) = plt.subplots(1, 2, figsize=(12, 1.0 + 0.45 * len(stats)), sharey=True)
    for yi, s in zip(y, stats):
        _bar(ax_mean, yi, s.mean, "black" if s.reference else "tab:blue")
        if s.diff:
            colour = {"better": "tab:green", "worse": "tab:red"}.get(s.verdict(mode), "grey")
            _bar(ax_diff, yi, s.diff, colour)
    ax_mean.set_yticks(y, [s.arm + (" (reference)" if s.reference else "") for s in stats], fontsize=7)
    better = "higher" if mode == "max" else "lower"
    ax_mean.set(xlabel=f"{suite}/{name} ({better} is better)", title="mean over seeds and objects, 95% interval")
    ax_diff.axvline(0.0, color="black", linewidth=0.8)
    ax_diff.set(xlabel=f"{name} - reference", title="paired difference from the reference (grey: not distinguishable)")
    for ax in (ax_mean, ax_diff):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{comp.sweep}: {SUITES[suite]} ({suite}), final evaluation", fontsize=9)
    return _save(fig, out_dir / f"intervals_{suite}.png")


def _bar(ax, y: float, iv, colour: str) -> None:
    """A point at the mean with its interval as a horizontal error bar (just the point when there is none)."""
    xerr = None if iv.low is None else [[iv.mean - iv.low], [iv.high - iv.mean]]
    ax.errorbar([iv.mean], [y], xerr=xerr, fmt="o", color=colour, capsize=4)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _numeric(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_key(comp: Comparison, key: str, out_dir: Path) -> Path:
    """<metric>_by_<key>.png: each trial's best metric against the value it sampled for `key`, one series per
    setting of the other space keys (their mean per value joined by a line), diverged trials marked, the
    all-white image's score on the same validation views as a dashed line."""
    import matplotlib.pyplot as plt

    scored = sorted((r for r in comp.rows if r.best is not None), key=lambda r: r.trial_id)  # Tune's grid order
    fig, ax = plt.subplots(figsize=(7, 4.5))
    numbers = _numeric([r.values[key] for r in scored])
    if numbers is None:  # categories (bundle labels, strings) in the order the grid visits them
        order = list(dict.fromkeys(r.values[key] for r in scored))
        x_of = {r.run_id: float(order.index(r.values[key])) for r in scored}
        ax.set_xticks(range(len(order)), order, rotation=20 if len(order) > 4 else 0, fontsize=8)
    else:
        x_of = {r.run_id: x for r, x in zip(scored, numbers)}
        if min(numbers) > 0 and max(numbers) >= 20 * min(numbers):
            ax.set_xscale("log")
    series: dict[str, list[TrialRow]] = {}
    for r in scored:
        series.setdefault(r.setting(comp.space_keys, leave_out=key), []).append(r)
    for label, rows in sorted(series.items()):
        xs = sorted({x_of[r.run_id] for r in rows})
        means = [float(np.mean([r.best for r in rows if x_of[r.run_id] == x])) for x in xs]
        line, = ax.plot(xs, means, "-", alpha=0.6, label=label or None)
        ax.plot([x_of[r.run_id] for r in rows], [r.best for r in rows], "o", color=line.get_color())
    bad = [r for r in scored if r.diverged]
    if bad:
        ax.plot([x_of[r.run_id] for r in bad], [r.best for r in bad], "x", color="tab:red", markersize=12, label="diverged")
    whites = [r.white for r in scored if r.white is not None]
    if whites:
        ax.axhline(float(np.mean(whites)), color="grey", linestyle="--", label=f"all-white image ({np.mean(whites):.2f})")
    better = "higher" if comp.mode == "max" else "lower"
    ax.set(xlabel=key, ylabel=f"best {comp.metric} ({better} is better)", title=f"{comp.sweep}: {comp.metric} by {key}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{_slug(comp.metric)}_by_{_slug(key)}.png")


def plot_curves(comp: Comparison, out_dir: Path) -> Path:
    """curves.png: training loss and the sweep metric over steps, one line per trial."""
    import matplotlib.pyplot as plt

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
    return _save(fig, out_dir / "curves.png")


def fetch_predictions(tracking_uri: str, comp: Comparison, tmp: Path) -> tuple[str, dict[str, Predictions]]:
    """(suite, trial id -> its latest predictions) from the trials' predictions/<suite>.npz artifacts: the
    fixed validation suite when any trial has it, else the real scans."""
    from zv_ray.eval.predictions import load_predictions

    for suite in ("val", "gso"):
        found = {}
        for r in comp.rows:
            # None: the trial died before its first evaluation.
            if path := download_artifact(tracking_uri, r.run_id, f"predictions/{suite}.npz", tmp / r.run_id):
                found[r.trial_id] = load_predictions(path)
        if found:
            return suite, found
    return "", {}


def _strip(views: np.ndarray) -> np.ndarray:  # [V, H, W, 3] -> [H, V * (W + 1) - 1, 3], grey between views
    gutter = np.full((views.shape[1], 1, 3), 200, np.uint8)
    return np.concatenate([x for v in views for x in (v, gutter)][:-1], axis=1)


def prediction_grid(comp: Comparison, suite: str, found: dict[str, Predictions], out_dir: Path) -> Path:
    """predictions_<suite>.png: a column per object every shown trial predicted (its test views side by side),
    the ground truth on top, then a row per trial (best first), labelled by what it sampled and its score."""
    import matplotlib.pyplot as plt

    shown = [r for r in comp.rows if r.trial_id in found]
    names = [n for n in found[shown[0].trial_id].names if all(n in found[r.trial_id].names for r in shown)]
    views = min(found[r.trial_id].pred.shape[1] for r in shown)
    first = found[shown[0].trial_id]
    rows = [("ground truth", first, "target")] + [(_row_label(comp, r), found[r.trial_id], "pred") for r in shown]
    fig, axes = plt.subplots(len(rows), len(names), figsize=(0.9 * views * len(names) + 2.2, 1.0 * len(rows) + 0.6),
                             squeeze=False)
    for i, (label, p, kind) in enumerate(rows):
        for j, name in enumerate(names):
            axes[i, j].imshow(_strip(getattr(p, kind)[p.names.index(name), :views]), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=6)
    for j, name in enumerate(names):
        axes[0, j].set_title(name, fontsize=7)
    fig.suptitle(f"{comp.sweep}: every trial's predictions on the same {suite} objects (latest evaluation)", fontsize=8)
    return _save(fig, out_dir / f"predictions_{suite}.png")


def _row_label(comp: Comparison, r: TrialRow) -> str:
    """Trial id, a line per sampled value (short key), its score."""
    score = "-" if r.best is None else f"{r.best:.2f}"
    sampled = [f"{k.rsplit('.', 1)[-1]}={r.values.get(k)}" for k in comp.space_keys]
    return "\n".join([r.trial_id, *sampled, f"{comp.metric} {score}" + (" (diverged)" if r.diverged else "")])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(tracking_uri: str, ref: str, out_dir: Path | None = None, *, log_artifacts: bool = True) -> Comparison:
    """Load the trials; write table.txt (the trials, then per suite the arms' intervals), a <metric>_by_<key>.png
    per space key, curves.png, intervals_<suite>.png and the trials' predictions side by side
    (predictions_<suite>.png) under out_dir (outputs/compare/<sweep>); by default log them as artifacts of the
    parent run under compare/."""
    import matplotlib
    from rich.console import Console

    matplotlib.use("Agg")
    comp = load_comparison(tracking_uri, ref)
    out_dir = out_dir or Path("outputs/compare") / comp.sweep
    out_dir.mkdir(parents=True, exist_ok=True)
    text = Console(record=True, width=200, file=io.StringIO())
    for t in tables(comp):
        text.print(t)
    (out_dir / "table.txt").write_text(text.export_text())
    comp.files = [out_dir / "table.txt", *(plot_key(comp, k, out_dir) for k in comp.space_keys), plot_curves(comp, out_dir),
                  *(plot_intervals(comp, suite, stats, out_dir) for suite, stats in comp.suites().items())]
    with tempfile.TemporaryDirectory() as tmp:
        suite, found = fetch_predictions(tracking_uri, comp, Path(tmp))
        if found:
            comp.files.append(prediction_grid(comp, suite, found, out_dir))
    if log_artifacts:
        for path in comp.files:
            log_artifact(tracking_uri, comp.parent_run_id, path, "compare")
    return comp
