"""A checkpoint's prediction of one object for the viewer: the Gaussians `zv-ray reconstruct` exports
(predicted from the input views), scored on the held-out views exactly as `zv-ray eval` scores them.

Input views come from the evaluation protocol (generated and real objects, rendered like `zv-ray eval`
does) or from a dataset's own views (inputs evenly spread over them, the rest held out).
"""

from __future__ import annotations

import numpy as np
import trimesh

from zv_ray.eval.evaluate import ObjectResult, eval_mode, evaluate_object, load_lpips_or_reason
from zv_ray.eval.loading import LoadedModel
from zv_ray.eval.prepare import EvalObject, render_eval_object
from zv_ray.eval.protocol import EvalProtocol
from zv_ray.inference.views import PosedViews, object_views
from zv_ray.render.renderer import Renderer
from zv_ray.view.items import Item


class Predictor:
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
        views = object_views(record["rgba"][order], record["intrinsics"][order], record["c2w"][order], num_inputs,
                             self.loaded.cfg.train.resolution)
        return EvalObject(name, views)

    def item(self, title: str, info: str, mesh: trimesh.Scene | None, obj: EvalObject, all_views: bool = False) -> Item:
        """The prediction beside the ground truth, from one model call: the Gaussians shown are the ones scored.
        Cameras: the inputs (and the held-out views if `all_views`)."""
        with eval_mode(self.loaded.model) as model:
            result = evaluate_object(model, obj, self.loaded.cfg, self._lpips)
        v = obj.views
        shown = v if all_views else PosedViews(v.input_images, v.input_intrinsics, v.input_c2w, v.num_inputs)
        return Item(title, self.describe(result) + "\n\n" + info, mesh=mesh, gaussians=result.gaussians, views=shown)

    def describe(self, result: ObjectResult) -> str:
        s, cfg = result.scores(), self.loaded.cfg
        lpips = "n/a" if s["lpips"] is None else f"{s['lpips']:.4f}"
        # Eval's margin over an all-white image (white alone scores ~15 dB).
        return (
            f"**PSNR {s['psnr']:.2f} dB** ({s['psnr_over_white']:+.2f} dB over white) · SSIM {s['ssim']:.4f} · LPIPS {lpips}  \n"
            f"on {len(result.target)} held-out views from {self.protocol.num_inputs} inputs at {cfg.train.resolution} px; "
            f"{result.gaussians.num:,} Gaussians; checkpoint step {self.loaded.step}"
        )

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
