"""The model zoo, with pinned parameter counts."""
from __future__ import annotations

import pytest
import torch

from evoplat.platform.config import ModelConfig
from evoplat.platform.models import build_model, count_parameters


@pytest.mark.parametrize("cfg, shape, count", [
    (dict(name="mlp", hidden=[128]), (1, 28, 28), 101_770),
    (dict(name="mlp", hidden=[256, 256]), (1, 28, 28), 269_322),
    (dict(name="vgg16"), (3, 32, 32), 14_724_042),
    (dict(name="resnet20"), (3, 32, 32), 272_474),
])
def test_parameter_counts(cfg, shape, count):
    model = build_model(ModelConfig(**cfg), shape, 10)
    assert count_parameters(model) == count
    out = model.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, 10)


def test_init_seed_makes_replicas_identical():
    a = build_model(ModelConfig(name="resnet20", width=0.25), (3, 32, 32), 10)
    b = build_model(ModelConfig(name="resnet20", width=0.25), (3, 32, 32), 10)
    c = build_model(ModelConfig(name="resnet20", width=0.25, init_seed=1), (3, 32, 32), 10)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
