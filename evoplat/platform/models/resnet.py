"""ResNet-20 for CIFAR (He et al. 2016, option A shortcuts replaced by 1x1 projections)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """Three stages of three basic blocks; `width` scales the 16/32/64 channel counts."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, blocks_per_stage: int = 3):
        super().__init__()
        chans = [max(1, int(round(c * width))) for c in (16, 32, 64)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        layers, cin = [], chans[0]
        for i, c in enumerate(chans):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(cin, c, 2 if (i > 0 and b == 0) else 1))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def features(self):
        return nn.Sequential(self.stem, self.layers, self.pool)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))))
