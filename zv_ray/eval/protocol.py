"""The evaluation camera protocol: structured input views and a separate held-out test rig (pure numpy).

Inputs (GS-LRM / Instant3D style): `num_inputs` cameras at one fixed elevation (20 deg) with evenly
spaced azimuths (0, 90, 180, 270 deg for 4 inputs), so the views surround the object and cover it
from above, the way sparse-view reconstructors are benchmarked on GSO. Test views: the evaluation
rig of the official zeroverse_rgba.py (16 azimuths x elevations 0/20/40/60 deg, 64 views), minus any
view that coincides with an input, optionally thinned to an evenly spread subset. Every camera sits
at radius 2.7 with a 50 deg horizontal FOV (the training renders' FOV) and looks at the origin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from zv_ray.config import RunConfig
from zv_ray.render.cameras import ring_cameras

# Two camera centres closer than this are the same view.
_SAME_VIEW_DISTANCE = 1e-4


@dataclass(frozen=True)
class EvalProtocol:
    # Input views: count, their shared elevation (azimuths evenly spaced from 0).
    num_inputs: int = 4
    input_elevation_deg: float = 20.0
    # Held-out test rig: azimuths per ring and ring elevations.
    test_azimuths: int = 16
    test_elevations_deg: tuple[float, ...] = field(default=(0.0, 20.0, 40.0, 60.0))
    # Keep this many test views, evenly spread over the rig (None: all of them).
    num_test_views: int | None = None
    # Camera distance from the origin and horizontal field of view of every camera.
    radius: float = 2.7
    fov_deg: float = 50.0

    def __post_init__(self) -> None:
        if self.num_inputs < 1:
            raise ValueError(f"num_inputs must be at least 1, got {self.num_inputs}")
        if self.num_test_views is not None and self.num_test_views < 1:
            raise ValueError(f"num_test_views must be at least 1, got {self.num_test_views}")

    @classmethod
    def for_config(cls, cfg: RunConfig, num_inputs: int | None = None, num_test_views: int | None = None) -> "EvalProtocol":
        """The protocol for a checkpoint's config: its input-view count and FOV unless overridden."""
        return cls(num_inputs=num_inputs or cfg.train.num_input_views, num_test_views=num_test_views, fov_deg=cfg.render.fov_deg)

    def params(self) -> dict[str, str]:
        """Flat description for MLflow params and results.json."""
        return {f"protocol.{k}": str(list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def input_cameras(protocol: EvalProtocol, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics [Vin, 4], c2w [Vin, 4, 4]) float32."""
    p = protocol
    return ring_cameras(p.num_inputs, [p.input_elevation_deg], p.radius, p.fov_deg, resolution)


def heldout_cameras(protocol: EvalProtocol, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The rig minus views coinciding with an input, thinned to num_test_views: (intrinsics [Vt, 4], c2w [Vt, 4, 4])."""
    p = protocol
    intrinsics, c2w = ring_cameras(
        p.test_azimuths * len(p.test_elevations_deg), list(p.test_elevations_deg), p.radius, p.fov_deg, resolution
    )
    inputs = input_cameras(p, resolution)[1][:, :3, 3]  # [Vin, 3]
    gap = np.linalg.norm(c2w[:, None, :3, 3] - inputs[None], axis=-1).min(axis=1)  # [Vrig]
    keep = np.flatnonzero(gap > _SAME_VIEW_DISTANCE)
    if p.num_test_views is not None and p.num_test_views < len(keep):
        keep = keep[np.linspace(0, len(keep) - 1, p.num_test_views).round().astype(int)]
    if len(keep) == 0:
        raise ValueError("the test rig has no view left once the input views are removed")
    return intrinsics[keep], c2w[keep]


def protocol_cameras(protocol: EvalProtocol, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs first, then test views: (intrinsics [Vin + Vt, 4], c2w [Vin + Vt, 4, 4]) float32."""
    k_in, c_in = input_cameras(protocol, resolution)
    k_t, c_t = heldout_cameras(protocol, resolution)
    return np.concatenate([k_in, k_t]), np.concatenate([c_in, c_t])
