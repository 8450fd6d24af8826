"""Strict config base: unknown keys and out-of-range values are one clear error naming the key."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound="StrictModel")


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key and the fix."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check spelling; see docs/configuration.md for valid keys)")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate_dict(model: type[M], data: dict[str, Any], source: str = "<dict>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass a path such as configs/tiny.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-4' -> ('train.lr', 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def set_keys(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Copy of plain config data with dotted keys ('train.lr') set to values: the one dotted-key setter. A number
    indexes a list ('data.sources.1.weight')."""
    data = copy.deepcopy(data)
    for dotted, value in values.items():
        *sections, leaf = dotted.split(".")
        node = data
        for part in sections:
            node = _child(node, part, dotted)
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"key {dotted}: {part} is not a section")
        if isinstance(node, list):
            node[_index(node, leaf, dotted)] = plain(value)
        else:
            node[leaf] = plain(value)
    return data


def _child(node: dict | list, part: str, dotted: str) -> Any:
    return node[_index(node, part, dotted)] if isinstance(node, list) else node.setdefault(part, {})


def _index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"key {dotted}: {part} is not an index of a list of {len(node)} (0 .. {len(node) - 1})")
    return int(part)


def plain(value: Any) -> Any:
    """numpy scalars (Tune samples them) -> Python values, so configs and MLflow params stay plain."""
    return value.item() if isinstance(value, np.generic) else value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Command-line 'section.key=value' texts applied in order (later ones win)."""
    return set_keys(data, dict(parse_override(text) for text in overrides))


def flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'train.lr': 0.0004, ...} for MLflow params and docs."""
    out: dict[str, Any] = {}
    for name, value in model.model_dump(mode="json").items():
        _flatten_into(out, f"{prefix}{name}", value)
    return out


def _flatten_into(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(out, f"{key}.{k}", v)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # data.sources.0.weight
        for i, v in enumerate(value):
            _flatten_into(out, f"{key}.{i}", v)
    else:
        out[key] = value


def config_hash(model: BaseModel) -> str:
    """Stable short hash of a config's content (sorted JSON)."""
    blob = json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
