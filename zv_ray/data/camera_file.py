"""Posed images as files: the camera file (`zv-ray reconstruct`, `zv-ray dataset --rendered`) and the image reader.

    {"frames": [{"file": "front.png", "fx": 549.0, "fy": 549.0, "cx": 256.0, "cy": 256.0,
                 "w": 512, "h": 512, "c2w": [[r00, r01, r02, tx], [.., .., .., ty], [.., .., .., tz], [0, 0, 0, 1]]}]}

OpenCV cameras (x right, y down, z forward), camera-to-world poses, pixel intrinsics with pixel
centres at +0.5, world +Z up, object centred at the origin. The official opencv_cameras.json of
Zeroverse / GS-LRM (frames with "file_path" and world-to-camera "w2c") is read as well. "w"/"h"
are optional; when given they must match the image. Files are read through the storage layer (local, s3://).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zv_ray.io import storage
from zv_ray.render.cameras import w2c_to_c2w

_ROTATION_TOL = 1e-3


class CameraFileError(ValueError):
    """A camera file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class CameraFrame:
    file: str | None  # image name the frame belongs to, if the file says
    intrinsics: np.ndarray  # [4] fx, fy, cx, cy
    c2w: np.ndarray  # [4, 4] OpenCV camera-to-world
    size: tuple[int, int] | None  # (w, h) when the file says


def _number(frame: dict[str, Any], key: str, where: str, positive: bool = False) -> float:
    value = frame.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CameraFileError(f"{where}.{key}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise CameraFileError(f"{where}.{key}: must be positive, got {value!r}")
    return float(value)


def _pose(frame: dict[str, Any], where: str) -> np.ndarray:
    """The frame's camera-to-world matrix, from "c2w" or the official "w2c"; must be rigid."""
    keys = [k for k in ("c2w", "w2c") if k in frame]
    if len(keys) != 1:
        raise CameraFileError(
            f"{where}: needs exactly one of 'c2w' (camera-to-world) or 'w2c' (world-to-camera), got {keys or 'neither'}"
        )
    key = keys[0]
    try:
        m = np.asarray(frame[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraFileError(f"{where}.{key}: expected a 4x4 list of numbers") from None
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise CameraFileError(f"{where}.{key}: expected a finite 4x4 matrix, got shape {m.shape}")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise CameraFileError(f"{where}.{key}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    rot = m[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=_ROTATION_TOL) or np.linalg.det(rot) < 0:
        raise CameraFileError(f"{where}.{key}: the upper-left 3x3 is not a rotation (orthonormal, det +1); no scale or mirroring")
    return w2c_to_c2w(m) if key == "w2c" else m


def _frame(frame: Any, where: str) -> CameraFrame:
    if not isinstance(frame, dict):
        raise CameraFileError(f"{where}: expected an object with fx, fy, cx, cy and c2w, got {type(frame).__name__}")
    file = frame.get("file", frame.get("file_path"))
    if file is not None and not isinstance(file, str):
        raise CameraFileError(f"{where}.file: expected an image name, got {file!r}")
    fx, fy = (_number(frame, k, where, positive=True) for k in ("fx", "fy"))
    cx, cy = (_number(frame, k, where) for k in ("cx", "cy"))
    intrinsics = np.array([fx, fy, cx, cy], dtype=np.float32)
    size = None
    if "w" in frame or "h" in frame:
        size = (int(_number(frame, "w", where, True)), int(_number(frame, "h", where, True)))
    return CameraFrame(file, intrinsics, _pose(frame, where).astype(np.float32), size)


def read_camera_file(path: str | Path) -> list[CameraFrame]:
    if not storage.is_file(path):
        raise CameraFileError(f"camera file not found: {path}")
    try:
        data = json.loads(storage.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CameraFileError(f"{path}: not valid JSON ({err})") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames:
        raise CameraFileError(f'{path}: expected {{"frames": [...]}} with one entry per image')
    return [_frame(f, f"{path}: frames[{i}]") for i, f in enumerate(frames)]


def frames_for_images(frames: list[CameraFrame], images: list[Path], camera_path: str | Path) -> list[CameraFrame]:
    """The frame of each image, in image order: by file name when every frame names one, else by position."""
    if all(f.file for f in frames):
        by_name = {Path(f.file).name: f for f in frames}
        missing = [p.name for p in images if p.name not in by_name]
        if missing:
            raise CameraFileError(
                f"{camera_path}: no frame for {', '.join(missing)} (frames name {', '.join(sorted(by_name))})"
            )
        return [by_name[p.name] for p in images]
    if len(frames) != len(images):
        raise CameraFileError(
            f"{camera_path}: {len(frames)} frames without file names for {len(images)} images; give one frame per "
            "image in the same order, or name each frame's image in 'file'"
        )
    return frames


def read_image(path: str | Path) -> np.ndarray:
    """Any 8/16-bit grey, RGB or RGBA image -> [H, W, 4] uint8 with RGB composited on white (alpha 255 without one)."""
    import imageio.v3 as iio

    if not storage.is_file(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        img = np.asarray(iio.imread(storage.read_bytes(path)))
    except Exception as err:  # noqa: BLE001 - any decoder failure means an unreadable image
        raise ValueError(f"cannot read image {path}: {err}") from err
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported pixel type {img.dtype} (use 8- or 16-bit PNG/JPEG)")
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[-1]
    if img.ndim != 3 or channels not in (1, 2, 3, 4):
        raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got shape {img.shape}")
    color = np.repeat(img[..., :1], 3, axis=-1) if channels < 3 else img[..., :3]
    if channels in (2, 4):
        alpha = img[..., -1:].astype(np.float32) / 255.0
        color = (color * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
        return np.concatenate([color, img[..., -1:]], axis=-1)
    return np.concatenate([color, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
