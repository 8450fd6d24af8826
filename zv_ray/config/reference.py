"""Configuration reference generated from the config models, so docs/configuration.md cannot drift.

    python -m zv_ray.config.reference > docs/configuration.md

Descriptions are the comment lines written above each field in the model's source.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from zv_ray.config.run import RunConfig

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """{field: the '# ...' lines above its declaration}; one comment above consecutive fields describes them all."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    after_field = False
    for line in inspect.getsource(model).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending = [] if after_field else pending
            pending.append(stripped.lstrip("# ").strip())
            after_field = False
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in model.model_fields:
            comments[match.group(1)] = " ".join(pending)
            after_field = True
        else:
            pending, after_field = [], False
    return comments


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a list-of-models field (data.sources), else None."""
    return _nested_model(get_args(annotation)[0]) if get_origin(annotation) is list else None


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    return [_plain(v) for v in value] if isinstance(value, list) else value


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if inspect.isclass(annotation) else None
    text = text or str(annotation)
    return re.sub(r"zv_ray\.config\.\w+\.", "", text.replace("typing.", "").replace("NoneType", "None"))


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    comments = field_comments(model)
    rows, nested = [], []
    for name, info in model.model_fields.items():
        sub = _nested_model(info.annotation)
        if sub is not None:
            nested.append((f"{prefix}{name}", sub))
            continue
        if (item := _item_model(info.annotation)) is not None:  # its items' keys: data.sources.N.weight
            nested.append((f"{prefix}{name}.N", item))
        default_text = "required" if info.is_required() else json.dumps(_plain(info.get_default(call_default_factory=True)))
        rows.append(f"| `{prefix}{name}` | `{_type_name(info.annotation)}` | `{default_text}` | {comments.get(name, '')} |")
    if rows:
        out += [f"## `{prefix.rstrip('.') or 'top level'}`", "", "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for sub_prefix, sub in nested:
        _section(sub, f"{sub_prefix}.", out)


def render_reference() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the config models by `python -m zv_ray.config.reference`; do not edit by hand.",
        "A run config is one YAML file with these sections; any key can be overridden on the command line",
        "with `--set section.key=value`. Unknown keys and out-of-range values stop the run before any",
        "cluster work, with one error naming the key.",
        "",
    ]
    _section(RunConfig, "", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
