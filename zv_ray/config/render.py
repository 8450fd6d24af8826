"""Multi-view rendering settings (official zeroverse_rgba.py: 32 views, 512x512, 50 deg horizontal FOV)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from zv_ray.config.base import StrictModel


class RenderConfig(StrictModel):
    # Views rendered per object.
    num_views: int = Field(32, ge=1, le=512)
    # Square image side in pixels.
    resolution: int = Field(512, ge=8, le=4096)
    # Horizontal field of view in degrees.
    fov_deg: float = Field(50.0, gt=1.0, lt=179.0)
    # Camera distance range from the origin.
    radius_range: tuple[float, float] = (1.5, 2.8)
    # Accept a camera only if its height (world +Z) lies in this range (official Blender bounds).
    height_range: tuple[float, float] = (-0.75, 1.6)
    # "random": official random directions; "ring": fixed elevations x evenly spaced azimuths (evaluation).
    layout: Literal["random", "ring"] = "random"
    # Elevations in degrees for the ring layout; num_views is split evenly across them.
    ring_elevations_deg: list[float] = Field(default_factory=lambda: [20.0])
    # Camera radius for the ring layout.
    ring_radius: float = Field(2.7, gt=0)
    # GL platform: "auto" picks EGL where it is hardware (GPU nodes), else OSMesa.
    backend: Literal["auto", "egl", "osmesa"] = "auto"
    # Anti-aliasing, the same on every platform: render at supersample x the resolution per axis without
    # multisampling, then average each block (soft edges on white, alpha = covered fraction; 1 = binary).
    supersample: int = Field(2, ge=1, le=4)
    # "flat": albedo under uniform white light (like Cycles' uniform world light without AO); "lit": soft lights.
    shading: Literal["flat", "lit"] = "flat"
    # Per-object percentile tonemap like the official script.
    exposure_normalize: bool = False
    # Also return per-view depth.
    depth: bool = False

    @field_validator("radius_range", "height_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"range low must not exceed high, got {list(v)}")
        return v
