"""Training checkpoints: model, optimizer, step, RNG state and the full config travel together.

Loading uses torch.load(weights_only=True): a checkpoint is tensors and plain Python values only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from zv_ray.config import RunConfig, validate_dict
from zv_ray.io import storage
from zv_ray.io.atomic import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
# Ray Train's record of the checkpoints it registered, in the run folder.
RAY_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"


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
    # The config beside the weights too, so a resume reads it without loading gigabytes of tensors.
    with atomic_path(Path(directory) / CONFIG_FILE) as tmp:
        tmp.write_text(payload["config_json"])
    return final


def checkpoint_config(path: str | Path) -> RunConfig:
    """The config a checkpoint (file, folder or run folder) was trained with."""
    file = resolve_checkpoint_file(path)
    beside = storage.join(file.rsplit("/", 1)[0], CONFIG_FILE)
    if storage.is_file(beside):
        return validate_dict(RunConfig, json.loads(storage.read_bytes(beside)), source=beside)
    return config_of(load_checkpoint(file))


def resolve_checkpoint_file(path: str | Path) -> str:
    """Accept a checkpoint file, a checkpoint directory, or a run directory (its latest checkpoint), local or remote."""
    path = storage.absolute(path)
    if storage.is_file(path):
        return path
    if storage.is_dir(path):
        direct = storage.join(path, CHECKPOINT_FILE)
        if storage.is_file(direct):
            return direct
        # A run folder: the latest checkpoint Ray Train registered, which it does only once every file is uploaded,
        # so a checkpoint cut short by a storage outage is never picked.
        snapshot = storage.join(path, RAY_TRAIN_SNAPSHOT)
        if storage.is_file(snapshot):
            latest = json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result")
            if latest:
                return storage.join(path, latest["checkpoint_dir_name"], CHECKPOINT_FILE)
        # Ray Train names checkpoint folders by time (checkpoint_<timestamp> / checkpoint_<index>): the last sorts last.
        candidates = [p for p in storage.list_files(path, CHECKPOINT_FILE, recursive=True) if storage.name(p) == CHECKPOINT_FILE]
        if candidates:
            return candidates[-1]
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a {CHECKPOINT_FILE} file, a checkpoint folder, or a run folder holding one"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    file = resolve_checkpoint_file(path)
    try:
        payload = torch.load(io.BytesIO(storage.read_bytes(file)), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{file} is not a zv-ray checkpoint (torch cannot read it: {str(err).splitlines()[0]})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in ("model", "step", "config_json")):
        raise ValueError(f"{file} is not a zv-ray checkpoint (it lacks model, step or config)")
    return payload


def config_of(payload: dict[str, Any]) -> RunConfig:
    return validate_dict(RunConfig, json.loads(payload["config_json"]), source="checkpoint config")
