r"""Re-identification: can a reconstruction be matched back to its source image?

For each reconstruction :math:`\tilde x_i`, rank the gallery images by distance
to it; a hit at :math:`k` means the source :math:`x_i` is among the :math:`k`
nearest. Reported as the fraction of hits, per :math:`k`.

Distances are Euclidean, either in pixel space or in the whitened coordinates
of the principal subspace of an :class:`~vicious.metrics.ImageStatistics`
(the Mahalanobis distance restricted to that subspace).

Ties: the source counts as found at rank :math:`1 + \#\{j : d_j^2 < d_{source}^2 - m\}`,
with :math:`m` a margin of :math:`10^{-10}` relative to the squared norms involved
(the round-off of the distance computation), so gallery images at the source's
distance (e.g. exact duplicates of the source) do not push it down.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._validate import check_tensor, validate_images, validate_pair
from .statistics import ImageStatistics, _check_fraction

__all__ = ["reidentification"]

_SPACES = ("pixel", "principal")

#: Relative margin (of |q|² + |g|²) within which two squared distances tie.
_TIE_RTOL = 1e-10


def _check_topk(topk: int | Sequence[int]) -> tuple[int, ...]:
    ks = (topk,) if isinstance(topk, int) and not isinstance(topk, bool) else topk
    try:
        ks = tuple(ks)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"topk must be a positive int or a sequence of them, got {topk!r}") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"topk must be a positive int or a non-empty sequence of them, got {topk!r}")
    return ks


@torch.no_grad()
def reidentification(
    x: torch.Tensor,
    x_rec: torch.Tensor,
    *,
    gallery: torch.Tensor | None = None,
    source_index: torch.Tensor | None = None,
    topk: int | Sequence[int] = (1, 5),
    space: str = "pixel",
    stats: ImageStatistics | None = None,
    variance_fraction: float = 0.9,
    max_block_elements: int = 1 << 24,
) -> dict[str, float]:
    r"""Top-k re-identification rate of reconstructions against a gallery.

    Args:
        x: Source images :math:`(N, C, H, W)` in ``[0, 1]``.
        x_rec: Their reconstructions, same shape and device.
        gallery: Candidate images :math:`(G, C, H, W)`; default ``x`` itself
            (each reconstruction must find its source among the N test images).
        source_index: Int tensor :math:`(N,)`, the row of ``gallery`` holding
            ``x[i]``; default ``arange(N)`` (the gallery starts with ``x``).
            Checked: ``gallery[source_index]`` must equal ``x`` (to 1e-3).
        topk: The k values to report, e.g. ``(1, 5)``.
        space: ``"pixel"`` or ``"principal"`` (needs ``stats``).
        stats: Population statistics, for ``space="principal"``.
        variance_fraction: The principal subspace's share of the variance.
        max_block_elements: Bound on the size of one block of the distance
            matrix (queries × gallery); the computation is chunked to fit.

    Returns:
        ``{"top1": float, "top5": float}`` (one ``"top{k}"`` key per k), each
        the fraction of reconstructions whose source is among the k nearest
        gallery images. Distances computed in float64.

    Raises:
        ValueError: On invalid images, mismatched shapes, a bad ``source_index``,
            an unknown ``space``, or ``space="principal"`` without ``stats``.
    """
    ks = _check_topk(topk)
    if space not in _SPACES:
        raise ValueError(f"space must be one of {_SPACES}, got {space!r}")
    a, b = validate_pair(x, x_rec)
    n = a.shape[0]
    if gallery is None:
        g = a
        if source_index is not None:
            raise ValueError("source_index is only meaningful with a gallery; omit it or pass gallery=")
        src = torch.arange(n, device=a.device)
    else:
        g = validate_images(gallery, "gallery")
        if tuple(g.shape[1:]) != tuple(a.shape[1:]):
            raise ValueError(
                f"gallery has image shape {tuple(g.shape[1:])} but x has {tuple(a.shape[1:])}; they must match"
            )
        if g.device != a.device:
            raise ValueError(f"gallery is on {g.device} but x is on {a.device}; move both to one device")
        if source_index is None:
            if g.shape[0] < n:
                raise ValueError(
                    f"gallery has {g.shape[0]} images, fewer than the {n} sources; pass source_index "
                    f"or put x first in the gallery"
                )
            src = torch.arange(n, device=a.device)
        else:
            si = check_tensor(source_index, "source_index")
            if si.dim() != 1 or si.shape[0] != n or si.is_floating_point() or si.dtype == torch.bool or si.is_complex():
                raise ValueError(
                    f"source_index must be an integer tensor of shape ({n},), got {si.dtype} {tuple(si.shape)}"
                )
            if int(si.min()) < 0 or int(si.max()) >= g.shape[0]:
                raise ValueError(f"source_index values must lie in [0, {g.shape[0] - 1}]")
            src = si.to(device=a.device, dtype=torch.long)
        diff = (g[src].to(torch.float64) - a.to(torch.float64)).abs().amax()
        if float(diff) > 1e-3:
            raise ValueError(
                f"gallery[source_index] differs from x by up to {float(diff):.3g}; each x[i] must be "
                f"gallery[source_index[i]]"
            )

    if space == "principal":
        if not isinstance(stats, ImageStatistics):
            raise ValueError("space='principal' needs stats=ImageStatistics.fit(train_images)")
        _check_fraction(variance_fraction)
        q = stats.whiten(b, "principal", variance_fraction)
        gal = stats.whiten(g, "principal", variance_fraction)
    else:
        q = b.to(torch.float64).clamp(0, 1).reshape(n, -1)
        gal = g.to(torch.float64).clamp(0, 1).reshape(g.shape[0], -1)

    g2 = gal.pow(2).sum(dim=1)
    rows = max(1, min(n, int(max_block_elements) // max(1, gal.shape[0])))
    ranks = []
    for start in range(0, n, rows):
        qb = q[start : start + rows]
        sb = src[start : start + rows, None]
        q2 = qb.pow(2).sum(dim=1, keepdim=True)
        d2 = q2 - 2.0 * (qb @ gal.T) + g2
        own = d2.gather(1, sb)
        # a gallery image must be closer than the source by more than the
        # round-off of the expansion |q|² - 2 q·g + |g|² to outrank it
        margin = _TIE_RTOL * (q2 + g2[sb])
        ranks.append((d2 < own - margin).sum(dim=1))
    rank = torch.cat(ranks)  # 0 = nearest
    return {f"top{k}": float((rank < k).to(torch.float64).mean()) for k in ks}
