"""The model zoo: registered builders `(input_shape, num_outputs, **options) -> nn.Module`.

A registered builder receives the options of `model:` its signature names (hidden, activation, width,
batch_norm) and `model.kwargs`; a builder named by `model.target` receives `model.kwargs` only. A user's
model is registered the same way (`@MODELS.register("mine")`) or named by `model.target`.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from evoplat.platform.models.mlp import MLP
from evoplat.platform.models.resnet import ResNet20
from evoplat.platform.models.vgg import VGG16
from evoplat.platform.registry import MODELS, resolve_target

SHARED_OPTIONS = ("hidden", "activation", "width", "batch_norm")


@MODELS.register("mlp")
def mlp(input_shape, num_outputs, hidden=(128,), activation="relu"):
    return MLP(int(torch.tensor(input_shape).prod()), list(hidden), num_outputs, activation)


@MODELS.register("vgg16")
def vgg16(input_shape, num_outputs, width=1.0, batch_norm=True):
    return VGG16(input_shape[0], num_outputs, width, batch_norm)


@MODELS.register("resnet20")
def resnet20(input_shape, num_outputs, width=1.0):
    return ResNet20(input_shape[0], num_outputs, width)


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Construct the model of `cfg` (a ModelConfig) for inputs of `input_shape` (without batch).

    The weights are initialised from `cfg.init_seed`, so every replica of a run starts identical.
    """
    options: dict = {}
    if cfg.target is not None:       # a user's builder gets model.kwargs only
        builder = resolve_target(cfg.target, "model")
    else:                            # a registered one also the shared options its signature names
        builder = MODELS.get(cfg.name)
        accepted = inspect.signature(builder).parameters
        options = {k: getattr(cfg, k) for k in SHARED_OPTIONS if k in accepted}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = builder(tuple(input_shape), num_classes, **{**options, **cfg.kwargs})
    if not isinstance(model, nn.Module):
        raise TypeError(f"model builder {builder!r} returned {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["build_model", "count_parameters", "MLP", "VGG16", "ResNet20", "MODELS"]
