"""The code imports in one direction: each package only imports packages of its own or an earlier layer
(docs/architecture.md), so there is no package-level cycle, lazy imports included; and only zv_ray/tracking.py
imports mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

LAYERS = [
    ["zv_ray.config"],
    ["zv_ray.io", "zv_ray.tracking"],
    ["zv_ray.zeroverse"],
    ["zv_ray.render"],
    ["zv_ray.splat", "zv_ray.model", "zv_ray.losses", "zv_ray.export"],
    ["zv_ray.inference"],
    ["zv_ray.data"],
    ["actors"],
    ["zv_ray.pipeline"],
    ["zv_ray.eval"],
    ["zv_ray.cluster"],
    ["zv_ray.train"],
    ["zv_ray.tune"],
    ["zv_ray.view"],
    ["zv_ray.cli"],
]
LAYER = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "actors":
        return "actors"
    return ".".join(parts[:2]) if parts[0] == "zv_ray" and len(parts) > 1 else None


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement of this file names, at any depth of the file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + ([f"zv_ray.{a.name}" for a in node.names] if node.module == "zv_ray" else [])
    return names


def imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, file) for every import statement, at any depth of the file."""
    found = []
    for path in [*REPO.glob("zv_ray/**/*.py"), *REPO.glob("actors/**/*.py")]:
        rel = path.relative_to(REPO)
        source = package_of(".".join(rel.with_suffix("").parts))
        for name in imported_modules(path):
            target = package_of(name)
            if target and source and target != source:
                found.append((source, target, str(rel)))
    return found


def test_every_package_has_a_layer():
    packages = {package_of(".".join(p.relative_to(REPO).with_suffix("").parts))
                for p in [*REPO.glob("zv_ray/*/__init__.py"), *REPO.glob("zv_ray/*.py"), REPO / "actors/__init__.py"]}
    assert packages - {"zv_ray.__init__"} <= set(LAYER), sorted(packages - set(LAYER) - {"zv_ray.__init__"})


def test_imports_only_go_to_earlier_layers():
    upward = [f"{f}: {a} (layer {LAYER[a]}) imports {b} (layer {LAYER[b]})"
              for a, b, f in imports() if LAYER[b] > LAYER[a]]
    assert not upward, "\n".join(sorted(set(upward)))


def test_packages_of_one_layer_do_not_import_each_other_both_ways():
    edges = {(a, b) for a, b, _ in imports()}
    both = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not both, both


def test_only_tracking_imports_mlflow():
    """Every MLflow call lives in zv_ray/tracking.py (its own imports and Ray's MLflow integrations alike);
    tests may read the store directly."""
    outside = [f"{path.relative_to(REPO)}: {name}"
               for folder in ("zv_ray", "actors", "benchmarks", "scripts") for path in REPO.glob(f"{folder}/**/*.py")
               for name in imported_modules(path)
               if "mlflow" in name.split(".") and path != REPO / "zv_ray/tracking.py"]
    assert not outside, "\n".join(sorted(outside))
