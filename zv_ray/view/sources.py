"""Where the viewer's objects come from: the Zeroverse generator, a Parquet dataset, a folder of meshes, a .ply.

Each source lists its objects (`labels`) and builds one `Item` at a time (`key` names what an item depends on,
for caching). Given a Predictor, generated, dataset and real objects become the model's prediction
beside their ground-truth mesh. Constructors check their inputs, so bad paths fail before a server starts.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path

import pyarrow.parquet as pq

from zv_ray.config import ZeroverseConfig, validate_dict
from zv_ray.data.meshes import UpAxis, load_object
from zv_ray.data.parquet import open_shard, shard_paths
from zv_ray.data.schema import RecordError, row_to_record
from zv_ray.eval.gso import find_objects, object_name
from zv_ray.export.ply import load_ply
from zv_ray.inference.views import object_views
from zv_ray.view.items import Item
from zv_ray.view.predictor import Predictor
from zv_ray.zeroverse import generate_object

# Panel name -> the generator's probability for it; each can follow the config, or be switched off or forced.
AUGMENTATIONS = {"cut": "p_boolean", "wireframe": "p_wireframe", "height fields": "p_heightfield"}
MODE_PROBABILITY = {"sampled": None, "off": 0.0, "forced": 1.0}  # None: the config's own probability


def _num(x: float) -> str:
    return f"{x:.2f}"


def params_markdown(params: dict, num_faces: int | None = None) -> str:
    """A Zeroverse object's sampled parameters as panel markdown: parts, height fields, cut, wireframe."""
    parts = params.get("parts", [])
    head = f"seed {params.get('seed')} · id {params.get('object_id')} · {len(parts)} parts"
    head += f" · {num_faces:,} faces" if num_faces is not None else ""
    rows = ["| part | primitive | semi-axes | height fields |", "|---|---|---|---|"]
    for i, part in enumerate(parts, 1):
        fields = part.get("heightfields", [])
        bumpy = sum(f is not None for f in fields)
        rows.append(f"| {i} | {part['kind']} | {' × '.join(map(_num, part['semi_axes']))} | {bumpy} of {len(fields)} faces |")
    cut, wire = params.get("boolean", {}), params.get("wireframe", {})
    cut_line = "**cut**: none"
    if cut.get("applied"):
        removed = f"removed {_num(cut.get('volume_removed', 0))} volume"
        outcome = f"not carved ({cut.get('reason', '')})" if cut.get("failed") else removed
        cut_line = f"**cut**: {cut['kind']} of size {_num(cut['size'])}, {outcome}"
    wire_line = "**wireframe**: none"
    if wire.get("applied"):
        wire_line = (f"**wireframe**: {wire['kind']} of size {_num(wire['size'])}, {wire.get('subdivision')} level "
                     f"{wire.get('level')}, tube radius {wire['radius']:.3f}")
    return "\n".join([head, "", *rows, "", cut_line + "  ", wire_line])  # two trailing spaces: a line break


def params_json(params: dict) -> str:
    """Every parameter, height-field grids and per-face material lists elided (they fill screens)."""
    def elide(value, key=""):
        if key in ("grid", "slot_sizes", "jittered_starts"):
            return "…"
        if isinstance(value, dict):
            return {k: elide(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [elide(v) for v in value]
        return round(value, 4) if isinstance(value, float) else value

    return json.dumps(elide(params), indent=1)


class Source:
    labels: list[str]

    def key(self, index: int) -> Hashable:
        return index

    def item(self, index: int) -> Item:
        raise NotImplementedError


class GeneratedObjects(Source):
    """Zeroverse objects (seed, first_id + i) made on demand; `modes` switches each augmentation."""

    def __init__(
        self, cfg: ZeroverseConfig, seed: int, first_id: int, count: int, predictor: Predictor | None = None
    ) -> None:
        self.cfg, self.seed, self.first_id, self.predictor = cfg, seed, first_id, predictor
        self.labels = [f"object {first_id + i}" for i in range(count)]
        self.modes = {name: "sampled" for name in AUGMENTATIONS}

    def key(self, index: int) -> Hashable:
        return index, tuple(self.modes.values())

    def config(self) -> ZeroverseConfig:
        """The generator config with the panel's augmentation switches applied (every stage draws its own
        random stream, so switching one leaves the rest of the object as it was)."""
        update = {AUGMENTATIONS[name]: MODE_PROBABILITY[mode] for name, mode in self.modes.items() if mode != "sampled"}
        return self.cfg.model_copy(update=update)

    def item(self, index: int) -> Item:
        object_id = self.first_id + index
        obj = generate_object(self.seed, object_id, self.config())
        info = params_markdown(obj.params, obj.stats["num_faces"])
        title = f"Zeroverse object {object_id}"
        if self.predictor is None:
            item = Item(title, info, mesh=obj.scene)
        else:
            views = self.predictor.protocol_views(f"zeroverse_{object_id}", obj.scene)
            item = self.predictor.item(title, info, obj.scene, views)
        item.details = params_json(obj.params)
        return item


class DatasetObjects(Source):
    """A Parquet dataset's objects: their rendered views with camera frusta, and the mesh regenerated from
    (seed, object_id, generator config) in the row's parameters."""

    def __init__(self, path: Path, predictor: Predictor | None = None):
        self.predictor = predictor
        self._rows: list[tuple[Path, int, int]] = []  # shard, row group, row within the group
        ids: list[int] = []
        for shard_path in shard_paths(path):
            shard = open_shard(shard_path)
            for group in range(shard.num_row_groups):
                column = shard.read_row_group(group, columns=["object_id"])["object_id"].to_pylist()
                self._rows += [(shard_path, group, row) for row in range(len(column))]
                ids += column
        self.labels = [f"object {i}" for i in ids]

    def record(self, index: int) -> dict:
        shard_path, group, row = self._rows[index]
        values = pq.ParquetFile(shard_path).read_row_group(group).slice(row, 1).to_pylist()[0]
        try:
            return row_to_record(values)
        except RecordError as err:
            raise ValueError(f"{shard_path} row group {group} row {row} (object {values['object_id']}): {err}") from None

    def item(self, index: int) -> Item:
        record = self.record(index)
        params = json.loads(record["params_json"])
        rgba = record["rgba"]
        info = f"{len(rgba)} views of {rgba.shape[2]}×{rgba.shape[1]} px · pixels config {record['config_hash']}\n\n"
        title = f"dataset object {record['object_id']}"
        mesh = None
        if "config" in params:  # the mesh is not stored: regenerate it (a pure function of seed, id, config)
            cfg = validate_dict(ZeroverseConfig, params["config"], source=f"{title} params_json config")
            obj = generate_object(int(record["seed"]), int(record["object_id"]), cfg)
            mesh, info = obj.scene, info + params_markdown(params, obj.stats["num_faces"])
        if self.predictor is None:
            views = object_views(rgba, record["intrinsics"], record["c2w"], 0, rgba.shape[1])
            item = Item(title, info, mesh=mesh, views=views)
        else:
            item = self.predictor.item(title, info, mesh, self.predictor.dataset_views(title, record), all_views=True)
        item.details = params_json(params)
        return item


class RealObjects(Source):
    """Meshes such as Google Scanned Objects (sub-folders with model.obj, or .glb files), normalized like eval."""

    def __init__(self, path: Path, up: UpAxis = "auto", predictor: Predictor | None = None, extent: float = 1.8):
        self.paths = find_objects(path)
        self.up, self.extent, self.predictor = up, extent, predictor
        self.labels = [object_name(p) for p in self.paths]

    def item(self, index: int) -> Item:
        path, name = self.paths[index], self.labels[index]
        scene = load_object(path, self.extent, self.up)
        faces = sum(len(g.faces) for g in scene.geometry.values())
        info = f"`{path}` · {faces:,} faces"
        if self.predictor is None:
            return Item(name, info, mesh=scene)
        return self.predictor.item(name, info, scene, self.predictor.protocol_views(name, scene))


class PlyFile(Source):
    """One 3DGS .ply (ours or any 3DGS trainer's)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f".ply not found: {path}")
        self.path = path
        self.gaussians = load_ply(path)  # ValueError names a .ply that is not 3DGS
        self.labels = [path.name]

    def item(self, index: int) -> Item:
        return Item(self.path.name, f"`{self.path}` · {self.gaussians.num:,} Gaussians", gaussians=self.gaussians)
