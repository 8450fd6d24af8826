"""Training checkpoints: model, optimizer, step, RNG state and the full config travel together.

Loading uses torch.load(weights_only=True): a checkpoint is tensors and plain Python values only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zv_ray.config import RunConfig, validate_dict
from zv_ray.io.atomic import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"


def state_dict_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The bare model's weights, whether or not it is wrapped in DDP."""
    return getattr(model, "module", model).state_dict()


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    cfg: RunConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write <directory>/checkpoint.pt atomically (temp file + rename)."""
    payload = {
        "model": state_dict_of(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "torch_rng": torch.get_rng_state(),
        "config_json": cfg.model_dump_json(),
        "extra": extra or {},
    }
    final = Path(directory) / CHECKPOINT_FILE
    with atomic_path(final) as tmp:
        torch.save(payload, tmp)
    return final


def resolve_checkpoint_file(path: str | Path) -> Path:
    """Accept a checkpoint file, a checkpoint directory, or a run directory (latest checkpoint inside)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    candidates = sorted(path.glob(f"**/{CHECKPOINT_FILE}"), key=lambda p: p.stat().st_mtime)
    if candidates:
        return candidates[-1]
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a {CHECKPOINT_FILE} file, a checkpoint folder, or a run folder holding one"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    file = resolve_checkpoint_file(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"cannot read checkpoint {file}: {err}") from err
    for key in ("model", "step", "config_json"):
        if key not in payload:
            raise ValueError(f"checkpoint {file} lacks '{key}': not a zv-ray checkpoint")
    return payload


def config_of(payload: dict[str, Any]) -> RunConfig:
    return validate_dict(RunConfig, json.loads(payload["config_json"]), source="checkpoint config")
