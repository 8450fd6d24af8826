"""A trained GS-LRM and its config from a checkpoint, ready for inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from zv_ray.config import RunConfig
from zv_ray.model.checkpoint import config_of, load_checkpoint, resolve_checkpoint_file


@dataclass
class LoadedModel:
    model: torch.nn.Module  # GSLRM in eval mode on `device`
    cfg: RunConfig  # the config the checkpoint was trained with
    step: int
    path: str  # the checkpoint file actually read (local path or URI)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def load_model(checkpoint: str | Path, device: torch.device) -> LoadedModel:
    """Accepts a checkpoint file, a checkpoint folder or a run folder (its latest checkpoint)."""
    from zv_ray.model.gslrm import GSLRM

    path = resolve_checkpoint_file(checkpoint)
    payload = load_checkpoint(path)
    cfg = config_of(payload)
    model = GSLRM(cfg.model)
    model.load_state_dict(payload["model"])
    return LoadedModel(model.to(device).eval(), cfg, int(payload["step"]), path)
