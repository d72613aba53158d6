r"""Mean squared error per pixel.

:math:`\mathrm{MSE}(x, \tilde x) = \frac{1}{CHW} \sum_{c,h,w} (x_{chw} - \tilde x_{chw})^2`
for each image of a batch, pixels in ``[0, 1]``.

Reference: docs/method.md, "Measures".
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import prepare_pair

__all__ = ["mse", "MSE"]


def mse(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    r"""Per-image mean squared error over channels and pixels.

    Args:
        x: Original images, :math:`(N, C, H, W)`, float, values in ``[0, 1]``.
        x_rec: Reconstructions, same shape and device as ``x``.

    Returns:
        Tensor :math:`(N,)` with values in ``[0, 1]``; float64 if either input
        is float64, else float32 (half precision is computed in float32).
        Differentiable with respect to both inputs.

    Raises:
        ValueError: See :mod:`vicious.metrics._validate`.
    """
    a, b = prepare_pair(x, x_rec)
    return (a - b).pow(2).flatten(1).mean(dim=1)


class MSE(nn.Module):
    """Module form of :func:`mse` (no parameters); ``forward(x, x_rec) -> (N,)``."""

    def forward(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return mse(x, x_rec)
