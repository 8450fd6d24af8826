"""Real textured meshes (Google Scanned Objects and the like) as normalized trimesh scenes.

An evaluation object is a folder holding one mesh (model.obj + .mtl + texture, or a .glb/.gltf), or a
mesh file directly. It is normalized like a Zeroverse object: bounding box centred at the origin,
largest extent scaled to 1.8, world +Z up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import trimesh

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".off")
UpAxis = Literal["auto", "z", "y"]
# glTF is +Y up by specification; GSO's OBJs (and our world) are +Z up.
_Y_UP_TO_Z_UP = trimesh.transformations.rotation_matrix(np.pi / 2, [1.0, 0.0, 0.0])


def find_objects(objects_dir: str | Path) -> list[Path]:
    """Mesh files under `objects_dir`, one per object, sorted by object name.

    Each sub-folder is one object (its model.obj, else its only mesh file); loose mesh files are objects too."""
    root = Path(objects_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"objects folder not found: {root}")
    found: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() in MESH_SUFFIXES:
            found.append(entry)
        elif entry.is_dir():
            meshes = sorted(p for p in entry.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
            preferred = [p for p in meshes if p.stem == "model"]
            if preferred or len(meshes) == 1:
                found.append((preferred or meshes)[0])
            elif meshes:
                raise ValueError(f"{entry} holds several meshes ({', '.join(p.name for p in meshes)}); keep one or name it model.*")
    if not found:
        raise FileNotFoundError(f"no objects in {root}: expected sub-folders with model.obj / *.glb, or mesh files")
    return found


def object_name(mesh_path: Path) -> str:
    """The object folder's name (GSO layout <name>/model.obj), or the file stem for loose files."""
    return mesh_path.parent.name if mesh_path.stem == "model" else mesh_path.stem


def normalize_scene(scene: trimesh.Scene, extent: float) -> trimesh.Scene:
    """Copy of `scene` with its bounding box centred at the origin and its largest side equal to `extent`."""
    lo, hi = scene.bounds
    size = float((hi - lo).max())
    if not np.isfinite(size) or size <= 0:
        raise ValueError(f"scene has a degenerate bounding box {lo.tolist()} .. {hi.tolist()}")
    out = scene.copy()
    out.apply_translation(-(lo + hi) / 2)
    out.apply_scale(extent / size)
    return out


def load_object(mesh_path: str | Path, extent: float = 1.8, up: UpAxis = "auto") -> trimesh.Scene:
    """Load a textured mesh with its materials and normalize it (`up`: 'auto' is +Y for glTF, +Z otherwise)."""
    mesh_path = Path(mesh_path)
    try:
        scene = trimesh.load(mesh_path, force="scene")
    except Exception as err:  # noqa: BLE001 - any parser failure means an unreadable mesh
        raise ValueError(f"cannot load mesh {mesh_path}: {err}") from err
    if not scene.geometry:
        raise ValueError(f"mesh {mesh_path} holds no geometry")
    if up == "y" or (up == "auto" and mesh_path.suffix.lower() in (".glb", ".gltf")):
        scene.apply_transform(_Y_UP_TO_Z_UP)
    return normalize_scene(scene, extent)


def is_textured(scene: trimesh.Scene) -> bool:
    """Whether every mesh carries UVs and a texture image (so renders show the scan's colours)."""
    def textured(geom: trimesh.Trimesh) -> bool:
        visual = geom.visual
        if not isinstance(visual, trimesh.visual.TextureVisuals) or visual.uv is None:
            return False
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        return image is not None

    return all(textured(g) for g in scene.geometry.values())
