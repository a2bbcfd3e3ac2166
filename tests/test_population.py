"""Batched population evaluation equals evaluating each member as a plain module."""
from __future__ import annotations

import copy

import pytest
import torch

from evoplat.platform.config import ModelConfig
from evoplat.platform.models import build_model
from evoplat.platform.population.forward import ParamLayout, PopulationForward
from evoplat.platform.population.task import FITNESS


def _members(model, k, scale=0.05, seed=0):
    layout = ParamLayout(model)
    g = torch.Generator().manual_seed(seed)
    center = layout.flatten(model)
    return layout, center + scale * torch.randn(k, layout.size, generator=g)


@pytest.mark.parametrize("cfg, shape, bn_mode", [
    (dict(name="mlp", hidden=[32, 16]), (1, 8, 8), "batch"),
    (dict(name="resnet20", width=0.25), (3, 16, 16), "batch"),
    (dict(name="resnet20", width=0.25), (3, 16, 16), "eval"),
    (dict(name="vgg16", width=0.0625), (3, 32, 32), "batch"),
])
def test_batched_equals_per_member(cfg, shape, bn_mode):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**cfg), shape, 10)
    if bn_mode == "eval":  # give the running statistics non-trivial values
        model.train()(torch.randn(64, *shape))
    layout, flat = _members(model, 6)
    x = torch.randn(20, *shape)
    batched = PopulationForward(model, chunk_size=4, bn_mode=bn_mode).logits(flat, x)
    for i in range(flat.shape[0]):
        ref = copy.deepcopy(model)
        layout.load_into(ref, flat[i])
        ref.train(bn_mode == "batch")
        with torch.no_grad():
            expected = ref(x)
        torch.testing.assert_close(batched[i], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_fitness_kinds():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [3.0, 0.0]]])
    y = torch.tensor([0, 1])
    acc = FITNESS.get("accuracy")(logits, y)
    assert acc.tolist() == [1.0, 0.0]
    neg = FITNESS.get("neg_loss")(logits, y)
    assert neg[0] > neg[1]


def test_layout_roundtrip():
    model = build_model(ModelConfig(name="mlp", hidden=[5]), (3,), 2)
    layout = ParamLayout(model)
    flat = torch.arange(layout.size, dtype=torch.float32)
    layout.load_into(model, flat)
    assert torch.equal(layout.flatten(model), flat)
    assert layout.slices(("net.3.",)) == [(layout.size - 12, layout.size - 2), (layout.size - 2, layout.size)]
