"""Real textured meshes (Google Scanned Objects and the like) as normalized trimesh scenes.

An evaluation object is a folder holding one mesh (model.obj + .mtl + texture, or a .glb/.gltf), or a
mesh file directly. zv_ray/data/meshes.py loads it, normalized like a Zeroverse object: bounding box
centred at the origin, largest extent scaled to 1.8, world +Z up.
"""

from __future__ import annotations

from pathlib import Path

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".off")


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
