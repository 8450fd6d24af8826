"""The generated object: a textured trimesh scene, its parameters and counters, and its GLB bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial
from trimesh.visual.texture import TextureVisuals

from zv_ray.zeroverse.mesh import UVMesh


@dataclass
class ZeroverseObject:
    # Geometries "body" (all parts, one atlas texture) and, when drawn, "wireframe" (its own texture).
    scene: trimesh.Scene
    # Every sampled parameter (JSON-serializable): explains the object; (seed, object_id, config) regenerate it.
    params: dict
    # Counters and per-stage timings in seconds (not deterministic; kept out of params).
    stats: dict = field(default_factory=dict)

    def to_glb(self) -> bytes:
        """Deterministic GLB bytes (normals left out: they would depend on whether a renderer computed them)."""
        return trimesh.exchange.gltf.export_glb(self.scene, include_normals=False)


def textured_mesh(mesh: UVMesh, image: np.ndarray) -> trimesh.Trimesh:  # image [H, W, 3] uint8
    material = PBRMaterial(baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=1.0)
    return trimesh.Trimesh(
        vertices=mesh.vertices, faces=mesh.faces, visual=TextureVisuals(uv=mesh.uv, material=material), process=False
    )


def build_scene(parts: dict[str, tuple[UVMesh, np.ndarray]]) -> trimesh.Scene:
    """name -> (mesh, texture image) as one scene, geometries named and added in a fixed order."""
    scene = trimesh.Scene()
    for name, (mesh, image) in parts.items():
        scene.add_geometry(textured_mesh(mesh, image), geom_name=name, node_name=name)
    return scene
