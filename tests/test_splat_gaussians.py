"""The Gaussians container: shape checks and the helpers the trainer and evaluator use."""

import pytest
import torch

from zv_ray.splat import Gaussians
from zv_ray.splat.synthetic import random_blobs


def test_helpers_keep_every_field_together():
    g = Gaussians.cat([random_blobs(10, seed=0), random_blobs(10, seed=1)])
    assert g.batch_size == 2 and g.num == 10
    one = g.item(1)
    assert one.batch_size == 1 and torch.equal(one.colors, g.colors[1:])
    sub = g.select(torch.arange(10) < 4)
    assert sub.num == 4 and torch.equal(sub.means, g.means[:, :4])
    half = g.to(torch.float64).float()
    assert half.means.dtype == torch.float32 and torch.equal(half.quats, g.quats)
    leaf = Gaussians(**{k: v.clone().requires_grad_() for k, v in vars(g).items()})
    assert not any(t.requires_grad for t in vars(leaf.detach()).values())


def test_mismatched_shapes_name_the_field():
    g = random_blobs(5)
    with pytest.raises(ValueError, match=r"Gaussians.opacities has shape \(1, 5, 1\), expected \(1, 5\)"):
        Gaussians(means=g.means, scales=g.scales, quats=g.quats, opacities=g.opacities[..., None], colors=g.colors)
