"""The official Zeroverse / GS-LRM folder layout, both ways: one folder per object with its images and an
`opencv_cameras.json` ({"frames": [{w, h, fx, fy, cx, cy, w2c (4x4 OpenCV world-to-camera), file_path}]}).

    DIR/<object>/opencv_cameras.json     frames' file_path relative to the object folder
    DIR/<object>/images/000.png          RGBA, straight alpha (loaders composite on white), or RGB on white

`zv-ray dataset --rendered DIR` reads it (find_object_folders, read_object_folder); `zv-ray export` writes it
(write_object_folder). Cameras are read by the one camera-file parser (zv_ray/data/camera_file.py).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from zv_ray.data.camera_file import CameraFileError, read_camera_file, read_image
from zv_ray.data.records import RENDERED_SOURCE, source_id, source_name
from zv_ray.io import storage
from zv_ray.render.cameras import c2w_to_w2c

CAMERAS_FILE = "opencv_cameras.json"
# Camera files checked at once before an import: object stores answer many small reads in parallel.
_CHECK_THREADS = 16


def find_object_folders(root: str) -> tuple[list[str], list[dict[str, str]]]:
    """(object folders under `root`, skipped entries {source, reason}): every folder directly inside `root`
    whose cameras file parses, and each frame names its image. A malformed cameras file raises CameraFileError
    naming the file and field, a `root` without object folders FileNotFoundError; both before any cluster work.
    A folder without a cameras file is skipped (listed, not fatal)."""
    if not storage.is_dir(root):
        raise FileNotFoundError(f"--rendered {root} is not a folder; give a folder of object folders with {CAMERAS_FILE}")
    with ThreadPoolExecutor(_CHECK_THREADS) as pool:
        found = list(pool.map(_check_folder, storage.list_folders(root)))
    folders = [folder for folder, has_cameras in found if has_cameras]
    if not folders:
        raise FileNotFoundError(f"no object folders in {root}: expected {root}/<object>/{CAMERAS_FILE} beside the images")
    skipped = [{"source": source_name(RENDERED_SOURCE, root, f), "reason": f"no {CAMERAS_FILE} in {f}"}
               for f, ok in found if not ok]
    return folders, skipped


def _check_folder(folder: str) -> tuple[str, bool]:
    path = storage.join(folder, CAMERAS_FILE)
    if not storage.is_file(path):
        return folder, False
    for i, frame in enumerate(read_camera_file(path)):
        if not frame.file:
            raise CameraFileError(f"{path}: frames[{i}].file_path: missing; each frame names its image")
    return folder, True


def read_object_folder(root: str, folder: str, seed: int) -> dict[str, Any]:
    """One object folder -> a record (zv_ray.data.schema): RGBA composited on white (RGB kept, alpha 255),
    cameras as stored. FileNotFoundError / ValueError name an image that is missing, unreadable or the wrong size."""
    cameras = storage.join(folder, CAMERAS_FILE)
    frames = read_camera_file(cameras)
    rgba = [read_image(storage.join(folder, frame.file)) for frame in frames]
    height, width = rgba[0].shape[:2]
    for frame, image in zip(frames, rgba):
        if image.shape[:2] != (height, width):
            raise ValueError(f"{folder}: {frame.file} is {image.shape[1]}x{image.shape[0]} but the first view is "
                             f"{width}x{height}")
        if frame.size is not None and frame.size != (image.shape[1], image.shape[0]):
            raise ValueError(f"{cameras}: the frame of {frame.file} says {frame.size[0]}x{frame.size[1]} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
    source = source_name(RENDERED_SOURCE, root, folder)
    return {
        "object_id": np.int64(source_id(source)),
        "source": source,
        "seed": np.int64(seed),
        "config_hash": "",  # nothing of ours decided these pixels
        "params_json": "{}",
        "rgba": np.stack(rgba),
        "intrinsics": np.stack([f.intrinsics for f in frames]),
        "c2w": np.stack([f.c2w for f in frames]),
    }


def straight_alpha(rgba: np.ndarray) -> np.ndarray:  # [..., 4] uint8, RGB composited on white
    """The straight-alpha colours that composite on white back to `rgba`'s RGB (to within 1 level): what the
    official layout stores. Fully transparent pixels become white."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    color = np.where(alpha > 0, (rgb - 255.0 * (1.0 - alpha)) / np.maximum(alpha, 1e-6), 255.0)
    return np.concatenate([np.clip(np.round(color), 0, 255).astype(np.uint8), rgba[..., 3:]], axis=-1)


def write_object_folder(record: dict[str, Any], folder: str) -> None:
    """A record -> `folder`/images/NNN.png (straight-alpha RGBA) + `folder`/opencv_cameras.json, local or remote."""
    frames = []
    for i, (view, (fx, fy, cx, cy), c2w) in enumerate(zip(straight_alpha(record["rgba"]), record["intrinsics"], record["c2w"])):
        name = f"images/{i:03d}.png"
        buf = io.BytesIO()
        Image.fromarray(view, "RGBA").save(buf, "PNG")
        storage.write_bytes(storage.join(folder, name), buf.getvalue())
        frames.append({"w": view.shape[1], "h": view.shape[0], "fx": float(fx), "fy": float(fy), "cx": float(cx),
                       "cy": float(cy), "w2c": c2w_to_w2c(c2w.astype(np.float64)).tolist(), "file_path": name})
    cameras = {"object_id": int(record["object_id"]), "source": record["source"], "frames": frames}
    storage.write_bytes(storage.join(folder, CAMERAS_FILE), json.dumps(cameras, indent=1).encode())
