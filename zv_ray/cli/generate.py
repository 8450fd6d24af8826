"""`zv-ray generate`: write Zeroverse objects as .glb + params .json, and a contact sheet of previews.

    zv-ray generate --n 16 --seed 0 --out outputs/objects
    zv-ray generate --n 16 --out outputs/objects --config configs/paper.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

PREVIEW_MAX = 16  # objects shown on the contact sheet


def generate(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of objects (ids first-id .. first-id + n - 1)")] = 16,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Global seed [default: config's seed]")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("outputs/objects"),
    config: Annotated[Optional[Path], typer.Option("--config", help="Run config YAML (zeroverse section, seed)")] = None,
    first_id: Annotated[int, typer.Option("--first-id", min=0, help="Id of the first object")] = 0,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Render contact_sheet.png")] = True,
) -> None:
    """Generate Zeroverse objects: <id>.glb + <id>.json each, and contact_sheet.png of the first 16."""
    import json

    from rich.console import Console

    from zv_ray.config import ConfigError, load_config
    from zv_ray.zeroverse import generate_object

    console = Console()
    try:
        cfg = load_config(config)
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    seed = cfg.seed if seed is None else seed
    out.mkdir(parents=True, exist_ok=True)
    shown, labels, failed = [], [], 0
    for object_id in range(first_id, first_id + n):
        obj = generate_object(seed, object_id, cfg.zeroverse)
        name = f"{object_id:06d}"
        (out / f"{name}.glb").write_bytes(obj.to_glb())
        (out / f"{name}.json").write_text(json.dumps(obj.params, indent=1))
        s = obj.stats
        label = f"{object_id}: {s['num_parts']} parts"
        label += ", cut" * s["boolean_applied"] + ", wireframe" * s["wireframe_applied"]
        console.print(f"{name}.glb  {label}  {s['num_faces']} faces  {s['t_total']:.2f} s")
        failed += s["boolean_failed"]
        if len(shown) < PREVIEW_MAX:
            shown.append(obj)
            labels.append(label)
    console.print(f"wrote {n} objects to {out} (seed {seed}; boolean fallbacks: {failed})")
    if preview:
        from zv_ray.render.preview import save_contact_sheet

        console.print(f"contact sheet: {save_contact_sheet(shown, labels, out / 'contact_sheet.png')}")
