"""Score a model on evaluation objects: predict Gaussians from the input views, splat the test views,
PSNR / SSIM / LPIPS per test view, averaged per object, then over objects (the paper's GSO table).

Beside every score stands the all-white image's score on the same test views, and the PSNR margin over it:
objects cover a small part of a white frame, so white alone scores ~15 dB, and an untrained model is no
baseline (it renders grey, ~7 dB).

`score_objects` is the in-training hook (rank 0, every K steps, on views pre-rendered once by
`zv_ray.eval.prepare.prepare_eval_views`); `zv-ray eval` uses `evaluate_object` to keep the images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from zv_ray.config import RunConfig
from zv_ray.eval.prepare import EvalObject
from zv_ray.inference.predict import predict_gaussians, render_views
from zv_ray.splat.gaussians import Gaussians

METRICS = ("psnr", "ssim", "lpips")
# The predict-white baseline: the background colour everywhere.
WHITE = "white"
MARGIN = "psnr_over_white"  # psnr - white_psnr, dB
SCORE_KEYS = (*METRICS, *(f"{WHITE}_{m}" for m in METRICS), MARGIN)
# LPIPS(VGG) on many full-resolution views at once is memory-hungry: score in chunks.
_LPIPS_CHUNK = 16


@dataclass
class ObjectResult:
    name: str
    psnr: float  # mean over test views (inf only if every view is pixel-exact)
    ssim: float
    lpips: float | None  # None when LPIPS is unavailable
    white: dict[str, float | None]  # the same metrics for an all-white image at the same test views
    inputs: Tensor  # [Vin, 3, H, W] in [0, 1], CPU
    pred: Tensor  # [Vt, 3, H, W]
    target: Tensor  # [Vt, 3, H, W]
    gaussians: Gaussians  # B = 1: the prediction that rendered `pred`

    @property
    def margin(self) -> float:
        """PSNR over the all-white image, dB."""
        return self.psnr - self.white["psnr"]

    def scores(self) -> dict[str, float | None]:
        """Every SCORE_KEYS entry."""
        white = {f"{WHITE}_{m}": v for m, v in self.white.items()}
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips, **white, MARGIN: self.margin}


def load_lpips_or_reason(cfg: RunConfig, device: torch.device | str) -> tuple[torch.nn.Module | None, str | None]:
    """LPIPS(VGG) for scoring, or (None, why not) when its weights are missing, so the table says 'n/a'."""
    from zv_ray.losses.perceptual import LpipsWeightsMissing, load_lpips

    try:
        return load_lpips(cfg.loss.vgg_weights, device=device), None
    except LpipsWeightsMissing as err:
        return None, str(err)


def image_scores(
    pred: Tensor,  # [N, 3, H, W] in [0, 1]
    target: Tensor,  # [N, 3, H, W] in [0, 1]
    lpips_net: torch.nn.Module | None = None,
) -> dict[str, Tensor]:
    """Per-image metrics {'psnr': [N], 'ssim': [N], 'lpips': [N] when a network is given}."""
    from zv_ray.losses.metrics import lpips, psnr, ssim

    pred, target = pred.float(), target.float()
    out = {"psnr": psnr(pred, target).float().cpu(), "ssim": ssim(pred, target).float().cpu()}
    if lpips_net is not None:
        chunks = [lpips(lpips_net, p, t).flatten() for p, t in zip(pred.split(_LPIPS_CHUNK), target.split(_LPIPS_CHUNK))]
        out["lpips"] = torch.cat(chunks)
    return out


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The bare model (unwrapped from DDP: rank 0 alone evaluates, so no collectives) in eval mode, no grad."""
    bare = getattr(model, "module", model)
    was_training = bare.training
    bare.eval()
    try:
        with torch.no_grad():
            yield bare
    finally:
        bare.train(was_training)


def evaluate_object(
    model: torch.nn.Module, obj: EvalObject, cfg: RunConfig, lpips_net: torch.nn.Module | None = None
) -> ObjectResult:
    """One object, scored on its test views (call under `eval_mode`)."""
    views = obj.views.to(next(model.parameters()).device)
    gaussians = predict_gaussians(model, views, cfg)
    pred = render_views(gaussians, views, cfg)[0, views.num_inputs :].clamp(0, 1)  # [Vt, 3, H, W]
    target = views.images[0, views.num_inputs :]
    mean = {k: float(v.mean()) for k, v in image_scores(pred, target, lpips_net).items()}
    white = {k: float(v.mean()) for k, v in image_scores(torch.ones_like(target), target, lpips_net).items()}
    return ObjectResult(
        name=obj.name, psnr=mean["psnr"], ssim=mean["ssim"], lpips=mean.get("lpips"),
        white={m: white.get(m) for m in METRICS}, inputs=views.input_images[0].cpu(), pred=pred.cpu(), target=target.cpu(),
        gaussians=gaussians.to("cpu"),
    )


def mean_scores(scores: Iterable[dict[str, float | None]]) -> dict[str, float | None]:
    """Means over objects of every SCORE_KEYS entry; None for one that some object lacks (LPIPS unavailable)."""
    scores = list(scores)
    values = {m: [s.get(m) for s in scores] for m in SCORE_KEYS}
    return {m: float(np.mean(v)) if v and all(x is not None for x in v) else None for m, v in values.items()}


def summarize(scores: Iterable[dict[str, float | None]], prefix: str) -> dict[str, float]:
    """Means over objects as metrics: {'<prefix>/psnr', ..., '<prefix>/white_psnr', ..., '<prefix>/psnr_over_white'}
    (LPIPS keys only when every object has it)."""
    return {f"{prefix}/{m}": v for m, v in mean_scores(scores).items() if v is not None}


def score_objects(
    model: torch.nn.Module,
    views_list: list[EvalObject],
    cfg: RunConfig,
    lpips_net: torch.nn.Module | None = None,
    keep: int = 0,
) -> tuple[dict[str, dict[str, float | None]], list[ObjectResult]]:
    """Each pre-rendered object's scores ({name: every SCORE_KEYS entry}) and the results (images included) of
    the first `keep` objects. Takes a DDP-wrapped or bare model and leaves it in the mode it was in."""
    scores, kept = {}, []
    with eval_mode(model) as bare:
        for obj in views_list:
            result = evaluate_object(bare, obj, cfg, lpips_net)
            scores[obj.name] = result.scores()
            if len(kept) < keep:
                kept.append(result)
    return scores, kept


def evaluate_objects(
    model: torch.nn.Module,
    views_list: list[EvalObject],
    cfg: RunConfig,
    lpips_net: torch.nn.Module | None = None,
    prefix: str = "gso",
    keep: int = 0,
) -> tuple[dict[str, float], list[ObjectResult]]:
    """Mean metrics over pre-rendered objects ({'gso/psnr': ..., 'gso/white_psnr': ..., 'gso/psnr_over_white': ...})
    and the results (images included) of the first `keep` objects."""
    scores, kept = score_objects(model, views_list, cfg, lpips_net, keep)
    return summarize(scores.values(), prefix), kept
