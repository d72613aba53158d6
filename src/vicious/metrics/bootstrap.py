r"""Percentile-bootstrap confidence interval of a mean.

Resample the N values with replacement ``num_resamples`` times, take the mean
of each resample, and report the :math:`(1-c)/2` and :math:`(1+c)/2` quantiles
(linear interpolation, numpy's default) of those means.

Reference: Efron, B. & Tibshirani, R. J. (1993). An Introduction to the
Bootstrap, ch. 13 (percentile intervals).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vicious.seeding import generator

from ._validate import check_finite

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values: Any,
    *,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Percentile-bootstrap interval for the mean of ``values``.

    Args:
        values: 1-D tensor, array or sequence of N >= 1 finite numbers (e.g.
            per-image PSNR or r).
        confidence: Coverage in ``(0, 1)``.
        num_resamples: Number of bootstrap resamples, >= 1.
        seed: Seeds a private ``torch.Generator``: same inputs and seed, same
            interval (no global RNG state is read or changed).

    Returns:
        ``(low, high)`` Python floats, ``low <= high``.

    Raises:
        ValueError: On empty, non-1-D, non-numeric or non-finite values, or a
            bad ``confidence``/``num_resamples``/``seed``.
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}; e.g. 0.95")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"values has dtype {values.dtype}; expected real numbers")
        v = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"values must be a 1-D sequence of numbers, got {type(values).__name__}") from None
        v = torch.from_numpy(arr)
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {tuple(v.shape)}")
    check_finite(v, "values")

    n = v.numel()
    gen = generator(seed)
    step = max(1, (1 << 22) // n)  # bound the index matrix to ~4M entries
    means = []
    for start in range(0, num_resamples, step):
        m = min(step, num_resamples - start)
        idx = torch.randint(0, n, (m, n), generator=gen)
        means.append(v[idx].mean(dim=1))
    boot = torch.cat(means)
    alpha = (1.0 - float(confidence)) / 2.0
    q = torch.quantile(boot, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])
