r"""Reconstruction risk R (docs/method.md, "Measures").

For a test image :math:`x` with reconstruction :math:`\tilde x`,

.. math::
    r = \frac{d(x, \bar x)}{d(x, \tilde x)}, \qquad
    d(a, b) = \sqrt{(a - b)^\top \Sigma^+ (a - b)},

with :math:`\bar x`, :math:`\Sigma` the pixel mean and covariance of the
train+validation images (an :class:`~vicious.metrics.ImageStatistics`) and
:math:`\Sigma^+` the pseudo-inverse. R is the mean of r over the test set;
r > 1 means the reconstruction is closer to the input than the population mean,
the best guess of a server that saw nothing.

Two variants, and every table must say which one it shows:

* ``"exact"``: the definition above, for comparison with the paper. Directions
  of tiny variance dominate :math:`\Sigma^+`, and this R was measured *not* to
  follow reconstruction quality (docs/method.md, "The caution about R exact").
* ``"principal"``: the same distance restricted to the leading principal
  subspace holding ``variance_fraction`` (default 0.9) of the variance, i.e.
  :math:`\Sigma^+` replaced by the pseudo-inverse of the rank-k truncation.

The denominator is clamped at :data:`RISK_EPS` = 1e-6 (in whitened units, where
a typical :math:`d(x, \bar x)` is of order :math:`\sqrt{k}`), so a perfect
reconstruction gives a large but finite r.
"""

from __future__ import annotations

import torch

from ._validate import check_finite, check_tensor, compute_dtype, validate_pair
from .statistics import ImageStatistics, _check_fraction, _check_variant

__all__ = ["RISK_EPS", "reconstruction_risk", "summarise_risk"]

#: Lower clamp on the denominator d(x, x̃).
RISK_EPS: float = 1e-6


@torch.no_grad()
def reconstruction_risk(
    x: torch.Tensor,
    x_rec: torch.Tensor,
    stats: ImageStatistics,
    variant: str = "exact",
    variance_fraction: float = 0.9,
    *,
    chunk_size: int = 1024,
) -> torch.Tensor:
    r"""Per-image reconstruction risk :math:`r = d(x, \bar x) / d(x, \tilde x)`.

    Args:
        x: Test images :math:`(N, C, H, W)`, float, in ``[0, 1]``, with
            ``(C, H, W) == stats.shape``.
        x_rec: Their reconstructions, same shape and device.
        stats: Population statistics from :meth:`ImageStatistics.fit` on the
            train+validation images.
        variant: ``"exact"`` (full :math:`\Sigma^+`) or ``"principal"``.
        variance_fraction: In ``(0, 1]``; the principal subspace's share of
            the variance (checked but unused for ``"exact"``).
        chunk_size: Images per matrix product (bounds memory at large D).

    Returns:
        Tensor :math:`(N,)`, non-negative and finite, on ``x``'s device,
        float64 if an input is float64 else float32. Computed in float64 on
        ``stats.device`` (move the statistics once with ``stats.to(device)``
        rather than moving every batch).

    Raises:
        ValueError: On invalid images, a shape that does not match ``stats``,
            statistics without variance, an unknown variant or a fraction
            outside ``(0, 1]``.
    """
    if not isinstance(stats, ImageStatistics):
        raise ValueError(
            f"stats must be an ImageStatistics (use ImageStatistics.fit(train_images)), got {type(stats).__name__}"
        )
    _check_variant(variant)
    _check_fraction(variance_fraction)
    a, b = validate_pair(x, x_rec)
    stats.check_images(a, "x")
    k = stats.num_components(variant, variance_fraction)
    if k == 0:  # statistics built by hand or loaded: fit refuses images without variance
        raise ValueError("the statistics hold no variance (rank 0), so the reconstruction risk is undefined; "
                         "fit ImageStatistics on images that differ")
    out_dtype = compute_dtype(a, b)
    step = max(1, int(chunk_size))
    parts = []
    for start in range(0, a.shape[0], step):
        xa = stats.flatten(a[start : start + step])
        xb = stats.flatten(b[start : start + step])
        # one product for both distances: rows [x - x̄ ; x - x̃]
        z = stats.project(torch.cat([xa - stats.mean, xa - xb]), k)
        d = z.pow(2).sum(dim=1).sqrt()
        m = xa.shape[0]
        parts.append(d[:m] / d[m:].clamp_min(RISK_EPS))
    return torch.cat(parts).to(device=a.device, dtype=out_dtype)


def summarise_risk(r: torch.Tensor) -> dict[str, float]:
    """Summary of per-image risks: ``{"mean": R, "median": ..., "frac_above_one": ...}``.

    Args:
        r: Tensor :math:`(N,)` from :func:`reconstruction_risk`, finite, N >= 1.

    Returns:
        Python floats: the mean (the paper's R), the median (mean of the two
        middle values for even N, as numpy does) and the fraction of images
        with r > 1.

    Raises:
        ValueError: If ``r`` is not a non-empty, finite, 1-D float tensor.
    """
    t = check_tensor(r, "r")
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"r must be a non-empty 1-D tensor (N,), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"r has dtype {t.dtype}; expected floating point")
    check_finite(t, "r")
    v = t.detach().to(device="cpu", dtype=torch.float64)
    s, _ = torch.sort(v)
    n = s.numel()
    median = float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)
    return {
        "mean": float(v.mean()),
        "median": median,
        "frac_above_one": float((v > 1.0).to(torch.float64).mean()),
    }
