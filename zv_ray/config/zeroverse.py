"""Zeroverse procedural-object generator settings (LRM-Zero, official create_shapes.py / augment_shape.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from zv_ray.config.base import StrictModel

Primitive = Literal["cube", "sphere", "cylinder", "cone", "torus"]
ALL_PRIMITIVES: tuple[Primitive, ...] = ("cube", "sphere", "cylinder", "cone", "torus")


class TextureConfig(StrictModel):
    # "procedural": generated noise/stripes/checkers/cells/gradients; "folder": images sampled from `folder`.
    source: Literal["procedural", "folder"] = "procedural"
    # Folder of .png/.jpg texture images, used when source == "folder".
    folder: str | None = None
    # Side length in pixels of each generated texture.
    resolution: int = Field(128, ge=8, le=4096)
    # Fraction of faces whose material id is permuted to a neighbour so seams do not follow primitive faces.
    seam_jitter: float = Field(0.25, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _folder_needed(self) -> "TextureConfig":
        if self.source == "folder" and not self.folder:
            raise ValueError("texture.source is 'folder' but texture.folder is not set; give a folder of images")
        return self


class ZeroverseConfig(StrictModel):
    # Primitive pool for parts (the paper: all five; the public code: cube, sphere, cylinder).
    primitives: list[Primitive] = Field(default_factory=lambda: list(ALL_PRIMITIVES))
    # Relative weight of 1, 2, ... parts (official default 5,5,5,4,4,3,2,1,1 for 1..9 parts).
    part_count_weights: list[float] = Field(default_factory=lambda: [5, 5, 5, 4, 4, 3, 2, 1, 1])
    # Range of each semi-axis of a part, before normalization.
    semi_axis_range: tuple[float, float] = (0.25, 2.0)
    # Largest extent of the final object (official 1.8: object inside [-0.9, 0.9]^3).
    normalized_extent: float = Field(1.8, gt=0)
    # Mesh density n (official 50): cube n x n cells per face; sphere n x 2n; cylinder and cone side n x 3n with
    # n/2 rings per cap; torus 3n x n. Lower it (e.g. 16) for fast online generation.
    mesh_resolution: int = Field(50, ge=4, le=400)
    # Probability that a face (material slot) gets a height field. The augmentation rates (0.4 / 0.4 / 0.2) are
    # this project's choice: no stated rate for the paper's 800K objects was found, and the official code takes
    # them as arguments (create_shapes.py --smooth_probability, 1 - this rate: default 1.0, i.e. no height
    # fields, 0.1 in its MultiShape class; zeroverse_rgba.py --boolean_probability / --wireframe_probability:
    # default 0, 1.0 in its README's example).
    p_heightfield: float = Field(0.4, ge=0.0, le=1.0)
    # Height amplitude as a fraction of the part's smallest extent (official: U(0, 0.2 * 2 * min semi-axis)).
    heightfield_scale: float = Field(0.2, ge=0.0, le=1.0)
    # Probability that an object gets one boolean-difference cut (this project's choice: see p_heightfield).
    p_boolean: float = Field(0.4, ge=0.0, le=1.0)
    # Probability that an object gets one wireframe primitive (this project's choice: see p_heightfield).
    p_wireframe: float = Field(0.2, ge=0.0, le=1.0)
    # Size range of cutters and wireframe primitives.
    augment_size_range: tuple[float, float] = (0.3, 0.6)
    # Cutter shapes for the boolean difference (official: all five, uniformly).
    cutter_primitives: list[Primitive] = Field(default_factory=lambda: list(ALL_PRIMITIVES))
    # Primitive shapes turned into wireframes (official: all five, uniformly).
    wire_primitives: list[Primitive] = Field(default_factory=lambda: list(ALL_PRIMITIVES))
    # Blender wireframe thickness range: the full width of a strut (official 0.01 .. 0.03); tube radius is half.
    wire_thickness_range: tuple[float, float] = (0.01, 0.03)
    texture: TextureConfig = Field(default_factory=TextureConfig)

    @field_validator("primitives", "cutter_primitives", "wire_primitives")
    @classmethod
    def _nonempty_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one primitive is needed (choose from cube, sphere, cylinder, cone, torus)")
        if len(set(v)) != len(v):
            raise ValueError(f"primitives repeat: {v}")
        return v

    @field_validator("part_count_weights")
    @classmethod
    def _weights(cls, v: list[float]) -> list[float]:
        if not 1 <= len(v) <= 9:
            raise ValueError("part_count_weights needs 1 to 9 entries (weight of 1 part, 2 parts, ...)")
        if any(w < 0 for w in v) or sum(v) <= 0:
            raise ValueError("part_count_weights must be non-negative with a positive sum")
        return v

    @field_validator("semi_axis_range", "augment_size_range", "wire_thickness_range")
    @classmethod
    def _ordered_positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 < lo <= hi:
            raise ValueError(f"range must satisfy 0 < low <= high, got {list(v)}")
        return v
