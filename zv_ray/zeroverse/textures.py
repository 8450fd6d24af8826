"""Textures, one per material slot: random procedural recipes, or images sampled from a folder.

A recipe is a small JSON dict (the sampled parameters plus an integer seed for noise lattices), so a
texture is a pure function of (recipe, resolution) and every object's params explain its textures.
Procedural recipes stack 1 to 3 layers, each a pattern (noise, stripes, checkers, cells, gradient,
dots) at its own scale and orientation, optionally domain-warped, mapped through a colour palette;
layers are blended through masks that are patterns themselves, and a fine grain goes on top.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates

PATTERNS = ("noise", "stripes", "checkers", "cells", "gradient", "dots")
SCHEMES = ("analogous", "complementary", "triadic", "monochrome", "random")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LATTICE = 64  # noise lattice side; coordinates wrap around it


# ---------------------------------------------------------------- sampling recipes


def _pattern(rng: np.random.Generator) -> dict:
    kind = PATTERNS[rng.integers(len(PATTERNS))]
    # Features per texture side, log-uniform so coarse and fine patterns are equally common.
    scale = float(np.exp(rng.uniform(np.log(1.0), np.log(24.0 if kind != "gradient" else 3.0))))
    p: dict = {"kind": kind, "scale": scale, "angle_deg": float(rng.uniform(0.0, 180.0))}
    if kind == "noise":
        p |= {"octaves": int(rng.integers(1, 6)), "persistence": float(rng.uniform(0.35, 0.7)),
              "style": ("fbm", "ridged", "turbulence")[rng.integers(3)]}
    elif kind == "stripes":
        p |= {"profile": ("sine", "square", "saw", "triangle")[rng.integers(4)], "duty": float(rng.uniform(0.2, 0.8))}
    elif kind == "cells":
        p |= {"mode": ("flat", "distance", "edges")[rng.integers(3)], "jitter": float(rng.uniform(0.4, 1.0))}
    elif kind == "gradient":
        p |= {"shape": ("linear", "radial")[rng.integers(2)]}
    elif kind == "dots":
        p |= {"radius": float(rng.uniform(0.15, 0.45))}
    return p


def _palette(rng: np.random.Generator) -> list[list[float]]:
    scheme = SCHEMES[rng.integers(len(SCHEMES))]
    k = int(rng.integers(2, 6))
    base = rng.uniform()
    if scheme == "analogous":
        offsets = rng.uniform(-0.08, 0.08, k)
    elif scheme in ("complementary", "triadic"):
        hues = 2 if scheme == "complementary" else 3
        offsets = rng.integers(0, hues, k) / hues + rng.uniform(-0.03, 0.03, k)
    elif scheme == "monochrome":
        offsets = np.zeros(k)
    else:
        offsets = rng.uniform(0.0, 1.0, k)
    sat, val = rng.uniform(0.1, 1.0, k), rng.uniform(0.15, 1.0, k)
    # Rounded before use, so the recorded palette is exactly the one rendered.
    return [[round(c, 4) for c in colorsys.hsv_to_rgb((base + o) % 1.0, s, v)] for o, s, v in zip(offsets, sat, val)]


def sample_recipe(rng: np.random.Generator) -> dict:
    """A random procedural texture recipe (JSON-serializable)."""
    layers = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))):
        layers.append({
            "pattern": _pattern(rng),
            "palette": _palette(rng),
            # Domain warp strength (organic distortion) and posterize steps (0 = smooth ramp).
            "warp": float(rng.uniform(0.0, 0.4)) if rng.uniform() < 0.35 else 0.0,
            "steps": int(rng.integers(2, 6)) if rng.uniform() < 0.3 else 0,
        })
    masks = [
        {"pattern": _pattern(rng), "threshold": float(rng.uniform(0.3, 0.7)), "softness": float(rng.uniform(0.0, 0.15))}
        for _ in layers[1:]
    ]
    return {"seed": int(rng.integers(2**31)), "layers": layers, "masks": masks, "grain": float(rng.uniform(0.0, 0.12))}


def sample_image_recipe(rng: np.random.Generator, files: list[str]) -> dict:
    """A random crop of one of `files` (names inside the texture folder)."""
    # crop: [x, y, side]: side as a fraction of the image's short side, x and y within the free range.
    crop = [float(rng.uniform()), float(rng.uniform()), float(rng.uniform(0.5, 1.0))]
    return {"image": files[rng.integers(len(files))], "crop": crop, "rot90": int(rng.integers(4))}


def list_images(folder: str | Path) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"texture folder {folder} does not exist (zeroverse.texture.folder)")
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"texture folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


# ---------------------------------------------------------------- rendering


def _value_noise(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:  # [L, L], [H, W] x2 -> [H, W]
    """Smoothstep-interpolated value noise on a wrapping lattice (bilinear lookup at smoothstepped coordinates)."""
    fx, fy = x - np.floor(x), y - np.floor(y)
    xs, ys = x - fx + fx * fx * (3 - 2 * fx), y - fy + fy * fy * (3 - 2 * fy)
    return map_coordinates(lattice, [ys, xs], order=1, mode="grid-wrap")


def _fbm(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, octaves: int, persistence: float) -> np.ndarray:
    total, norm = np.zeros_like(x), 0.0
    for o in range(octaves):
        amp = persistence**o
        total += amp * _value_noise(rng.uniform(size=(_LATTICE, _LATTICE)), x * 2**o, y * 2**o)
        norm += amp
    return total / norm


def _cells(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, jitter: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # 3 x [H, W]
    """Worley cells: nearest and second-nearest feature distance, and the nearest cell's random value."""
    offsets = rng.uniform(0.5 - jitter / 2, 0.5 + jitter / 2, (2, _LATTICE, _LATTICE))
    values = rng.uniform(size=(_LATTICE, _LATTICE))
    cx, cy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    f1, f2, value = np.full(x.shape, np.inf), np.full(x.shape, np.inf), np.zeros(x.shape)
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            i, j = (cx + di) % _LATTICE, (cy + dj) % _LATTICE
            d = np.hypot(x - (cx + di + offsets[0, j, i]), y - (cy + dj + offsets[1, j, i]))
            nearer = d < f1
            f2 = np.where(nearer, f1, np.minimum(f2, d))
            value = np.where(nearer, values[j, i], value)
            f1 = np.minimum(f1, d)
    return f1, f2, value


def _tri(t: np.ndarray) -> np.ndarray:
    return 1.0 - np.abs(2.0 * (t - np.floor(t)) - 1.0)


def _field(p: dict, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, warp: float) -> np.ndarray:  # -> [H, W]
    """Evaluate a pattern at texture coordinates (u, v) in [0, 1]."""
    a = np.deg2rad(p["angle_deg"])
    x = ((u - 0.5) * np.cos(a) - (v - 0.5) * np.sin(a)) * p["scale"]
    y = ((u - 0.5) * np.sin(a) + (v - 0.5) * np.cos(a)) * p["scale"]
    if warp:
        x = x + warp * p["scale"] * (_fbm(rng, u * 3, v * 3, 2, 0.5) - 0.5)
        y = y + warp * p["scale"] * (_fbm(rng, u * 3 + 17, v * 3, 2, 0.5) - 0.5)
    kind = p["kind"]
    if kind == "noise":
        n = _fbm(rng, x, y, p["octaves"], p["persistence"])
        n = (n - n.min()) / max(n.max() - n.min(), 1e-9)  # stretch: averaged octaves lose contrast
        if p["style"] == "fbm":
            return n
        return 1.0 - np.abs(2 * n - 1) if p["style"] == "ridged" else np.abs(2 * n - 1)
    if kind == "stripes":
        t = x - np.floor(x)
        if p["profile"] == "sine":
            return 0.5 + 0.5 * np.sin(2 * np.pi * x)
        if p["profile"] == "square":
            return (t < p["duty"]).astype(float)
        return t if p["profile"] == "saw" else _tri(x)
    if kind == "checkers":
        return ((np.floor(x) + np.floor(y)) % 2).astype(float)
    if kind == "cells":
        f1, f2, value = _cells(rng, x, y, p["jitter"])
        if p["mode"] == "flat":
            return value
        return np.clip(f1 / 1.2, 0, 1) if p["mode"] == "distance" else (f2 - f1 > 0.08).astype(float)
    if kind == "gradient":
        return _tri(x / 2) if p["shape"] == "linear" else _tri(np.hypot(x, y) / 2)
    if kind == "dots":
        d = np.hypot(x - np.floor(x) - 0.5, y - np.floor(y) - 0.5)
        return np.clip((p["radius"] - d) / 0.03 + 0.5, 0.0, 1.0)  # soft edge against aliasing
    raise ValueError(f"unknown texture pattern {kind!r}")


def _ramp(t: np.ndarray, palette: list[list[float]], steps: int) -> np.ndarray:  # [H, W] -> [H, W, 3]
    if steps:
        t = np.minimum(np.floor(t * steps), steps - 1) / max(steps - 1, 1)
    stops = np.linspace(0.0, 1.0, len(palette))
    cols = np.asarray(palette)
    return np.stack([np.interp(t, stops, cols[:, c]) for c in range(3)], axis=-1)


def render_recipe(recipe: dict, resolution: int) -> np.ndarray:  # -> [resolution, resolution, 3] uint8
    """Render a procedural recipe. Row 0 of the image is v = 1 (image top), as textures are stored."""
    t = (np.arange(resolution) + 0.5) / resolution
    u, v = np.meshgrid(t, t[::-1])
    out = None
    for i, layer in enumerate(recipe["layers"]):
        rng = np.random.default_rng([recipe["seed"], i])
        rgb = _ramp(_field(layer["pattern"], rng, u, v, layer["warp"]), layer["palette"], layer["steps"])
        if out is None:
            out = rgb
            continue
        mask = recipe["masks"][i - 1]
        m = _field(mask["pattern"], np.random.default_rng([recipe["seed"], i, 1]), u, v, 0.0)
        soft = max(mask["softness"], 1e-3)
        m = np.clip((m - mask["threshold"]) / (2 * soft) + 0.5, 0.0, 1.0)[..., None]
        out = out * (1.0 - m) + rgb * m
    grain = _fbm(np.random.default_rng([recipe["seed"], 99]), u * resolution / 2, v * resolution / 2, 1, 0.5)
    out = out * (1.0 + recipe["grain"] * (2.0 * grain[..., None] - 1.0))
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@lru_cache(maxsize=32)
def _load_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def render_image_recipe(recipe: dict, folder: str | Path, resolution: int) -> np.ndarray:  # -> [res, res, 3] uint8
    image = _load_image(str(Path(folder) / recipe["image"]))
    w, h = image.size
    x0, y0, size = recipe["crop"]
    side = size * min(w, h)
    box = (x0 * (w - side), y0 * (h - side), x0 * (w - side) + side, y0 * (h - side) + side)
    tile = image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)
    return np.ascontiguousarray(np.rot90(np.asarray(tile), recipe["rot90"]))
