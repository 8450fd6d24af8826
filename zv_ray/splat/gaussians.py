"""A batch of 3D Gaussians in activated (render-ready) form, the one type the model, renderer and .ply share."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Gaussians:
    means: Tensor  # [B, N, 3] world units
    scales: Tensor  # [B, N, 3] activated standard deviations, world units
    quats: Tensor  # [B, N, 4] wxyz, unit norm
    opacities: Tensor  # [B, N] in (0, 1)
    colors: Tensor  # [B, N, 3] RGB, >= 0 (the model clamps at 0 only; rendered images are clamped where scored)

    def __post_init__(self) -> None:
        b, n = self.means.shape[:2]
        expected = {"means": (b, n, 3), "scales": (b, n, 3), "quats": (b, n, 4), "opacities": (b, n), "colors": (b, n, 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} has shape {got}, expected {shape} (B={b}, N={n})")

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num(self) -> int:
        """Gaussians per batch item (N)."""
        return self.means.shape[1]

    def _map(self, fn) -> "Gaussians":
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return self._map(Tensor.detach)

    def to(self, *args, **kwargs) -> "Gaussians":
        return self._map(lambda t: t.to(*args, **kwargs))

    def float(self) -> "Gaussians":
        return self._map(Tensor.float)

    def item(self, b: int) -> "Gaussians":
        """Batch item b as a Gaussians with B=1."""
        return self._map(lambda t: t[b : b + 1])

    def select(self, mask: Tensor) -> "Gaussians":  # [N] bool or long indices, applied to every batch item
        return self._map(lambda t: t[:, mask])

    @classmethod
    def cat(cls, items: list["Gaussians"]) -> "Gaussians":
        """Stack along the batch axis (all items must have the same N)."""
        return cls(**{f.name: torch.cat([getattr(g, f.name) for g in items]) for f in fields(cls)})
