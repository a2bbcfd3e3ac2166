"""VGG16 for 32x32 inputs (the CIFAR variant: 13 conv layers with batch norm, a small classifier)."""
from __future__ import annotations

from torch import nn

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """`width` scales every channel count (1.0 is the standard 14.7M-parameter network).

    The classifier is kept separate (`self.classifier`) so that hybrid ES can mutate it alone and
    compute `self.features` once per phase.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in CFG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, int(round(v * width)))
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(self.features(x))
