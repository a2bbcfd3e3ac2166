"""A plain multilayer perceptron on flattened inputs."""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, activation: str = "relu"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
