"""The model zoo: build a network by name from a `ModelConfig`."""
from __future__ import annotations

import torch
from torch import nn

from .mlp import MLP
from .resnet import ResNet20
from .vgg import VGG16


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Construct `cfg.name` for inputs of `input_shape` (without batch) and `num_classes` outputs.

    The weights are initialised from `cfg.init_seed`, so every replica of a run starts identical.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        if cfg.name == "mlp":
            return MLP(int(torch.tensor(input_shape).prod()), cfg.hidden, num_classes, cfg.activation)
        if cfg.name == "vgg16":
            return VGG16(input_shape[0], num_classes, cfg.width, cfg.batch_norm)
        if cfg.name == "resnet20":
            return ResNet20(input_shape[0], num_classes, cfg.width)
        if cfg.name in ("rso_mnist", "rso_cifar10"):
            from .rso_nets import build_rso_net
            return build_rso_net(cfg.name, input_shape, num_classes)
    raise ValueError(f"unknown model '{cfg.name}'")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["build_model", "count_parameters", "MLP", "VGG16", "ResNet20"]
