r"""Peak signal-to-noise ratio with data range 1.

:math:`\mathrm{PSNR} = 10 \log_{10}(1 / \mathrm{MSE})` dB.

Two aggregations are reported (docs/method.md, "Measures"):

* the paper's: PSNR of the *test-set mean* MSE,
  :func:`psnr_from_mean_mse` (or :func:`psnr_from_mse` on a mean MSE accumulated
  while streaming over batches);
* the mean of the per-image PSNR, :func:`psnr` followed by ``.mean()``.

By Jensen's inequality the mean of per-image PSNR is at least the PSNR of the
mean MSE, so the two must not be mixed in a table.

Identical images have MSE 0 and an infinite PSNR. To keep every result finite,
the MSE is clamped from below at :data:`MSE_FLOOR` = 1e-10, so the PSNR never
exceeds :data:`MAX_PSNR_DB` = 100 dB.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ._validate import check_finite, check_tensor
from .mse import mse

__all__ = ["MSE_FLOOR", "MAX_PSNR_DB", "psnr", "psnr_from_mse", "psnr_from_mean_mse", "PSNR"]

#: Lower clamp on the MSE before taking the logarithm.
MSE_FLOOR: float = 1e-10
#: The PSNR of two identical images, ``10 * log10(1 / MSE_FLOOR)``.
MAX_PSNR_DB: float = 100.0


def _psnr_of(m: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(1.0 / m.clamp_min(MSE_FLOOR))


def psnr(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    r"""Per-image PSNR in dB, data range 1.

    Args:
        x: Original images, :math:`(N, C, H, W)`, float, values in ``[0, 1]``.
        x_rec: Reconstructions, same shape and device.

    Returns:
        Tensor :math:`(N,)` of PSNR values in ``[0, 100]`` dB (the MSE is
        clamped at 1e-10, so identical images give exactly 100 dB).

    Raises:
        ValueError: See :mod:`vicious.metrics._validate`.
    """
    return _psnr_of(mse(x, x_rec))


def psnr_from_mse(mse_value: float | torch.Tensor) -> torch.Tensor:
    r"""PSNR in dB of a precomputed MSE (data range 1), elementwise.

    Handy for streaming evaluation: accumulate the sum of per-image MSE over
    batches, divide by the count, and call this once.

    Args:
        mse_value: A Python number or a float tensor of any shape; finite and
            non-negative.

    Returns:
        Tensor of the same shape (0-d for a number; float64 for a number, else
        the tensor's dtype, half precision promoted to float32), at most 100 dB.

    Raises:
        ValueError: If the value is not numeric, not finite, or negative.
    """
    if isinstance(mse_value, bool) or not isinstance(mse_value, (numbers.Real, torch.Tensor)):
        raise ValueError(
            f"mse_value must be a number or a float tensor, got {type(mse_value).__name__}"
        )
    if isinstance(mse_value, torch.Tensor):
        m = check_tensor(mse_value, "mse_value")
        if not m.is_floating_point():
            raise ValueError(f"mse_value has dtype {m.dtype}; expected floating point, use mse_value.float()")
        if m.dtype in (torch.float16, torch.bfloat16):
            m = m.float()
    else:
        m = torch.tensor(float(mse_value), dtype=torch.float64)
    check_finite(m, "mse_value")
    if m.numel() and float(m.min()) < 0:
        raise ValueError(f"mse_value must be non-negative, got minimum {float(m.min()):.6g}")
    return _psnr_of(m)


def psnr_from_mean_mse(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    r"""The paper's PSNR: :math:`10 \log_{10}(1 / \overline{\mathrm{MSE}})` over the set.

    Args:
        x: Original images, :math:`(N, C, H, W)`, float, values in ``[0, 1]``.
        x_rec: Reconstructions, same shape and device.

    Returns:
        0-d tensor, PSNR of the mean per-image MSE (every image has the same
        pixel count, so this is also the MSE over all pixels), at most 100 dB.
    """
    return _psnr_of(mse(x, x_rec).mean())


class PSNR(nn.Module):
    """Module form of :func:`psnr` (no parameters); ``forward(x, x_rec) -> (N,)``."""

    def forward(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return psnr(x, x_rec)
