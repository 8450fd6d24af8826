"""How a sweep lays out its MLflow runs: one parent run, one child run per trial, found by these tags."""

from __future__ import annotations

SWEEP_TAG = "zv_ray.sweep"
ROLE_TAG = "zv_ray.sweep.role"  # "parent" or "trial"
TRIAL_TAG = "zv_ray.sweep.trial_id"
OUTCOME_TAG = "zv_ray.sweep.outcome"  # completed | stopped (by the scheduler) | diverged | failed | interrupted
SPACE_TAG = "zv_ray.sweep.space"  # comma-separated space keys, on the parent
METRIC_TAG = "zv_ray.sweep.metric"
MODE_TAG = "zv_ray.sweep.mode"
DIVERGED_TAG = "diverged"  # yes/no, the same tag the training loop sets
PARAM_PREFIX = "sweep."  # child-run params holding the sampled values (bundle labels included)
DONE_OUTCOMES = ("completed", "stopped", "diverged")


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    if trial_id:
        query += f" and tags.`{TRIAL_TAG}` = '{trial_id}'"
    return MlflowClient(tracking_uri).search_runs([experiment_id], filter_string=query, max_results=10_000)
