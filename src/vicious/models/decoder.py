"""The decoder G: the mirror image of the WideResNet classifier.

A linear layer maps the K outputs to 64w x S/8 x S/8 (4 x 4 for 32-pixel images);
three groups of residual blocks of transposed convolutions upsample
S/8 -> S/4 -> S/2 -> S with 64w -> 32w -> 16w -> 16 channels (8 when w = 1); a final
3x3 convolution gives C channels and a sigmoid puts pixels in [0, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vicious.data.types import Task
from vicious.models.wideresnet import PreActBlock, blocks_per_group

InputForm = Literal["raw", "softmax"]


class PreActUpBlock(PreActBlock):
    """The classifier's residual block with transposed convolutions: stride 2 doubles the side."""

    @staticmethod
    def convolution(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Module:
        return nn.ConvTranspose2d(
            in_channels, out_channels, kernel, stride, kernel // 2, output_padding=stride - 1, bias=False
        )


def outputs_to_probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """What a server sees under the `softmax` output form: softmax over classes, or a
    sigmoid per attribute for multi-attribute tasks."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)


class WideResNetDecoder(nn.Module):
    """G: classifier outputs (N, K) -> images (N, C, S, S) in [0, 1].

    Args:
        depth, width: those of the classifier it mirrors.
        out_channels: C.
        num_inputs: K.
        image_size: S, a multiple of 8.
        input_form: ``"raw"`` (logits) or ``"softmax"`` (probabilities are computed
            from the logits first, so the decoder only ever uses what was released).
        task: ``"multiclass"`` or ``"multilabel"``; decides softmax vs sigmoid.
        input_norm: standardise each of the K inputs with a BatchNorm before the linear
            layer (not in the paper's G). Logits reach the decoder at scales that differ
            by orders of magnitude between classes and during training; standardised,
            the linear layer learns from the first steps (see docs/design.md).
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 1,
        out_channels: int = 3,
        num_inputs: int = 10,
        image_size: int = 32,
        input_form: InputForm = "raw",
        task: Task = "multiclass",
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        n = blocks_per_group(depth)
        if image_size % 8:
            raise ValueError(f"decoder image_size must be a multiple of 8, got {image_size}")
        if input_form not in ("raw", "softmax"):
            raise ValueError(f"input_form must be 'raw' or 'softmax', got {input_form!r}")
        self.input_form, self.task = input_form, task
        self.start = image_size // 8
        widths = (64 * width, 32 * width, 16 * width, 16 if width > 1 else 8)
        self.input_norm = nn.BatchNorm1d(num_inputs) if input_norm else nn.Identity()
        self.fc = nn.Linear(num_inputs, widths[0] * self.start * self.start)
        layers, channels = [], widths[0]
        for out_channels_group in widths[1:]:
            for i in range(n):
                layers.append(PreActUpBlock(channels, out_channels_group, 2 if i == 0 else 1))
                channels = out_channels_group
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Conv2d(channels, out_channels, 3, 1, 1)

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.input_form == "softmax":
            outputs = outputs_to_probabilities(outputs, self.task)
        return self.forward_observed(outputs)

    def forward_observed(self, outputs: torch.Tensor) -> torch.Tensor:
        """G on the vector the server observes (probabilities for a ``softmax`` decoder), as
        released by the user: the softmax already happened on the device."""
        x = self.fc(self.input_norm(outputs)).view(outputs.shape[0], -1, self.start, self.start)
        x = torch.relu(self.bn(self.blocks(x)))
        return torch.sigmoid(self.head(x))
