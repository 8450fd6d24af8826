"""Real textured meshes (Google Scanned Objects and the like), local or in object storage, as normalized trimesh
scenes: bounding box centred at the origin, largest extent scaled to `extent` (1.8, like a Zeroverse object),
world +Z up. Evaluation (zv_ray/eval/gso.py) and `zv-ray dataset --meshes` load them the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh

from zv_ray.io import storage

# What `zv-ray dataset --meshes` renders: the formats whose UV textures trimesh loads.
MESH_SUFFIXES = (".obj", ".glb", ".gltf")
UpAxis = Literal["auto", "z", "y"]
# glTF is +Y up by specification; GSO's OBJs (and our world) are +Z up.
_Y_UP_TO_Z_UP = trimesh.transformations.rotation_matrix(np.pi / 2, [1.0, 0.0, 0.0])


class UnusableMesh(ValueError):
    """A mesh file that cannot become a training object: unreadable, empty, or without a texture."""


class _RemoteAssets(Mapping):
    """The files a remote mesh names (its .mtl, texture images, .bin buffers), read beside it on demand."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __getitem__(self, name: str) -> bytes:
        try:
            return storage.read_bytes(storage.join(self.folder, name))
        except FileNotFoundError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:  # trimesh only looks names up
        return iter(())

    def __len__(self) -> int:
        return 0


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
    """Load a textured mesh (local or s3://) with its materials and normalize it (`up`: 'auto' is +Y for glTF,
    +Z otherwise)."""
    path = str(mesh_path)
    suffix = Path(storage.name(path)).suffix.lower()
    try:
        if storage.is_remote(path):
            folder = path.rsplit("/", 1)[0]
            scene = trimesh.load(io.BytesIO(storage.read_bytes(path)), file_type=suffix.lstrip("."), force="scene",
                                 resolver=_RemoteAssets(folder))
        else:
            scene = trimesh.load(path, force="scene")
    except Exception as err:  # noqa: BLE001 - any parser failure means an unreadable mesh
        raise ValueError(f"cannot load mesh {path}: {err}") from err
    if not scene.geometry:
        raise ValueError(f"mesh {path} holds no geometry")
    if up == "y" or (up == "auto" and suffix in (".glb", ".gltf")):
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


def load_textured(mesh_path: str, extent: float) -> trimesh.Scene:
    """load_object for training data; UnusableMesh says why a mesh cannot be one (unreadable, empty, untextured)."""
    try:
        scene = load_object(mesh_path, extent)
    except ValueError as err:
        raise UnusableMesh(str(err)) from None
    if not is_textured(scene):
        raise UnusableMesh(f"{mesh_path} has no texture (UVs and an image; is its .mtl or texture file missing?)")
    return scene


def mesh_entries(root: str) -> tuple[list[str], list[str]]:
    """(mesh files, folders) directly inside `root`, checked to hold at least one mesh between them:
    FileNotFoundError before any cluster work otherwise. Only the top level is listed here; each folder is listed
    on its own (meshes_under) where the meshes are rendered, so a huge tree is never listed in one call."""
    if not storage.is_dir(root):
        raise FileNotFoundError(f"--meshes {root} is not a folder; give a folder of {'/'.join(MESH_SUFFIXES)} meshes")
    files, folders = storage.list_files(root, MESH_SUFFIXES), storage.list_folders(root)
    if not files and not any(meshes_under(folder) for folder in folders):  # stops at the first folder with one
        raise FileNotFoundError(
            f"no meshes under {root}: expected {', '.join(MESH_SUFFIXES)} files (an .obj with its .mtl and texture), "
            "in sub-folders or loose"
        )
    return files, folders


def meshes_under(folder: str) -> list[str]:
    """Every mesh file below `folder`, at any depth, sorted."""
    return storage.list_files(folder, MESH_SUFFIXES, recursive=True)
