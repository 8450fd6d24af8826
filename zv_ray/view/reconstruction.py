"""A checkpoint's reconstruction of one object for the viewer: the Gaussians `zv-ray reconstruct` exports
(predicted from the input views), scored on the held-out views exactly as `zv-ray eval` scores them.

Input views come from the evaluation protocol (generated and real objects, rendered like `zv-ray eval`
does) or from a dataset's own views (inputs evenly spread over them, the rest held out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from zv_ray.eval.evaluate import evaluate_object, inference, load_lpips_or_reason
from zv_ray.eval.loading import LoadedModel
from zv_ray.eval.prepare import EvalObject, render_eval_object
from zv_ray.eval.protocol import EvalProtocol
from zv_ray.eval.reconstruct import PosedViews, predict_gaussians
from zv_ray.render.renderer import Renderer
from zv_ray.splat.gaussians import Gaussians
from zv_ray.view.items import Item, PosedImages


@dataclass
class Reconstruction:
    gaussians: Gaussians  # B = 1, on the CPU
    scores: dict[str, float | None]  # psnr, ssim, lpips (None when unavailable), means over the held-out views
    num_test_views: int


class Reconstructor:
    """Predicts and scores objects with one model; owns the renderer for protocol views (GL: one thread)."""

    def __init__(self, loaded: LoadedModel, protocol: EvalProtocol) -> None:
        self.loaded, self.protocol = loaded, protocol
        self._renderer: Renderer | None = None  # made by the first render, on the thread that renders
        self._lpips, _why_not = load_lpips_or_reason(loaded.cfg, next(loaded.model.parameters()).device)  # None: "n/a"

    def protocol_views(self, name: str, scene: trimesh.Scene) -> EvalObject:
        """The object rendered at the protocol's input and test cameras, like `zv-ray eval`."""
        if self._renderer is None:
            self._renderer = Renderer.from_config(self.loaded.cfg.render)
        return render_eval_object(name, scene, self.protocol, self.loaded.cfg, self._renderer)

    def dataset_views(self, name: str, record: dict) -> EvalObject:
        """A dataset record's views reordered: inputs evenly spread over the record's views first, then the rest."""
        num_views, num_inputs = len(record["rgba"]), self.protocol.num_inputs
        if num_views <= num_inputs:
            raise ValueError(
                f"{name} has {num_views} views but the checkpoint takes {num_inputs} inputs: "
                f"a dataset needs at least {num_inputs + 1} views per object to hold one out"
            )
        inputs = np.linspace(0, num_views - 1, num_inputs).round().astype(int)
        order = np.concatenate([inputs, np.setdiff1d(np.arange(num_views), inputs)])
        return EvalObject(name, record["rgba"][order], record["intrinsics"][order], record["c2w"][order], num_inputs)

    def reconstruct(self, obj: EvalObject) -> Reconstruction:
        model, cfg, n = self.loaded.model, self.loaded.cfg, obj.num_inputs
        with inference(model) as bare:
            scored = evaluate_object(bare, obj, cfg, self._lpips)
        inputs = PosedViews(obj.rgba[:n], obj.intrinsics[:n], obj.c2w[:n])
        gaussians = predict_gaussians(model, inputs, cfg).detach().to("cpu", torch.float32)
        return Reconstruction(gaussians, scored.scores(), len(obj.rgba) - n)

    def item(self, title: str, info: str, mesh: trimesh.Scene | None, obj: EvalObject, all_views: bool = False) -> Item:
        """The reconstruction beside the ground truth; cameras: the inputs (and the held-out views if `all_views`)."""
        rec = self.reconstruct(obj)
        shown = len(obj.rgba) if all_views else obj.num_inputs
        views = PosedImages(obj.rgba[:shown], obj.intrinsics[:shown], obj.c2w[:shown], obj.num_inputs)
        return Item(title, self.describe(rec) + "\n\n" + info, mesh=mesh, gaussians=rec.gaussians, views=views)

    def describe(self, rec: Reconstruction) -> str:
        s, cfg = rec.scores, self.loaded.cfg
        lpips = "n/a" if s["lpips"] is None else f"{s['lpips']:.4f}"
        # Eval's margin over an all-white image, where its scores carry one (white alone scores ~15 dB).
        margin = f" ({s['psnr_over_white']:+.2f} dB over white)" if s.get("psnr_over_white") is not None else ""
        return (
            f"**PSNR {s['psnr']:.2f} dB**{margin} · SSIM {s['ssim']:.4f} · LPIPS {lpips}  \n"
            f"on {rec.num_test_views} held-out views from {self.protocol.num_inputs} inputs at {cfg.train.resolution} px; "
            f"{rec.gaussians.num:,} Gaussians; checkpoint step {self.loaded.step}"
        )

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
