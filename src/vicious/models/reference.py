"""Small classifiers of other families, for the audit's honest reference zoo.

What an honest classifier's outputs look like depends on its architecture as much as
on its training; the zoo (:mod:`vicious.defences.zoo`) therefore spans the WideResNet
and these three families. Each is a plain ``nn.Module``: images ``(N, C, S, S)`` in
[0, 1] -> logits ``(N, K)``, standardising its input with ``mean`` and ``std`` inside,
like :class:`~vicious.models.wideresnet.WideResNetClassifier`. CPU-sized: at 32 px a
training epoch on 5,000 images takes seconds on 2 cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class _Standardised(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PlainCNN(_Standardised):
    """Two 3x3 convolutions per stage (32, 64 channels), max pooling, one hidden dense layer of 128."""

    def __init__(self, in_channels: int = 3, num_outputs: int = 10, mean=(0.5,), std=(0.25,)) -> None:
        super().__init__(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(4), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardise(x)))


class SmallResNet(_Standardised):
    """A post-activation ResNet (torchvision's BasicBlock) with stages of 16, 32 and 64 channels."""

    def __init__(self, in_channels: int = 3, num_outputs: int = 10, mean=(0.5,), std=(0.25,)) -> None:
        super().__init__(mean, std)
        stages: list[nn.Module] = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            down = None
            if stride != 1 or width != channels:
                down = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            stages.append(BasicBlock(channels, width, stride, down))
            channels = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(64, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardise(x)))


class MLP(_Standardised):
    """Two hidden layers (512, 256) on the flattened image; ``image_size`` fixes the input size."""

    def __init__(self, in_channels: int = 3, num_outputs: int = 10, image_size: int = 32, mean=(0.5,),
                 std=(0.25,)) -> None:
        super().__init__(mean, std)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 512), nn.ReLU(),
                                 nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(x))
