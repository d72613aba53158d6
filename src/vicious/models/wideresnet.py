"""The classifier F: a pre-activation WideResNet (Zagoruyko & Komodakis, 2016).

WRN-d-w has a 16-channel stem, three groups of (d - 4) / 6 pre-activation residual
blocks with 16w, 32w and 64w channels (strides 1, 2, 2), BN-ReLU, global average
pooling and a linear layer to K outputs. The input is normalised inside the model,
so F takes images in [0, 1] exactly as a user would feed them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def blocks_per_group(depth: int) -> int:
    """Residual blocks per group of a WRN of the given depth: (depth - 4) / 6."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    return (depth - 4) // 6


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = self.convolution(in_channels, out_channels, 3, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = self.convolution(out_channels, out_channels, 3, 1)
        self.shortcut = (
            self.convolution(in_channels, out_channels, 1, stride)
            if stride != 1 or in_channels != out_channels
            else None
        )

    @staticmethod
    def convolution(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Module:
        """A kernel x kernel convolution without bias that divides the side by `stride`."""
        return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # The projection sees the pre-activated input, as in the original WRN.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class WideResNetClassifier(nn.Module):
    """F: images (N, C, S, S) in [0, 1] -> logits (N, K).

    Args:
        depth: 6n + 4 (28 in the paper; 10 or 16 for CPU-sized runs).
        width: widening factor w (1 for MNIST, 5 otherwise in the paper).
        in_channels: C, 1 or 3.
        num_outputs: K, classes or attributes.
        mean, std: per-channel statistics of the training images, applied inside.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 1,
        in_channels: int = 3,
        num_outputs: int = 10,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
    ) -> None:
        super().__init__()
        n = blocks_per_group(depth)
        if len(mean) not in (1, in_channels) or len(std) not in (1, in_channels):
            raise ValueError(f"mean/std need 1 or {in_channels} values, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        widths = (16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        layers, channels = [], 16
        for out_channels, stride in zip(widths, (1, 2, 2)):
            for i in range(n):
                layers.append(PreActBlock(channels, out_channels, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_outputs)
        self.num_outputs = num_outputs
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.blocks(self.stem(x))
        x = torch.relu(self.bn(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
