r"""Pixel statistics of an image population, for the reconstruction risk R.

:class:`ImageStatistics` holds the per-pixel mean :math:`\bar x` and the
eigendecomposition of the pixel covariance :math:`\Sigma` of a set of images
(flattened to :math:`D = C \cdot H \cdot W` features), e.g. the train+validation
split. It is fitted once, by streaming over batches, and then answers every
whitening request with a single matrix product:

* ``exact``: the Mahalanobis geometry of the Moore–Penrose pseudo-inverse
  :math:`\Sigma^+`. The eigenvalues kept are those above the cut-off that
  :func:`torch.linalg.pinv` (and :func:`numpy.linalg.pinv` with ``rtol=None``)
  use for a Hermitian matrix: :math:`\lambda > D \cdot \epsilon_{64} \cdot \lambda_{max}`.
  With :math:`V_r` the kept eigenvectors and :math:`\Lambda_r` their eigenvalues,
  :math:`(a-b)^\top \Sigma^+ (a-b) = \lVert \Lambda_r^{-1/2} V_r^\top (a-b) \rVert^2`.
* ``principal``: the same, restricted to the leading :math:`k` eigen-directions
  that together hold a fraction (default 0.9) of the total variance.

Because the eigenvectors are stored in order of decreasing eigenvalue, both
variants use a leading slice of one stored matrix, so no per-variant or
per-fraction matrix is ever built: a whitening call costs one
:math:`(N \times D)(D \times k)` product.

Memory: accumulating needs one float64 :math:`D \times D` matrix (1.2 GB at
:math:`D = 12288`, i.e. 64×64×3), held column-major so that the
eigendecomposition overwrites it with the eigenvectors; the only other
:math:`D \times D` memory is LAPACK's divide-and-conquer workspace
(:math:`2D^2`), so the peak is about 3.5 such matrices (measured at
:math:`D = 3072`; 4.8 before). Afterwards only the :math:`D \times r` kept
eigenvectors (:math:`r` = rank) are held, column-major. :meth:`ImageStatistics.fit`
computes this peak (:func:`fit_memory`) before allocating anything and refuses images
whose peak exceeds the device's memory (512×512 images would need terabytes).

Reference: docs/method.md, "Measures", reconstruction risk R.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import torch

from vicious.files import format_bytes

from ._validate import check_finite, check_tensor, check_unit_range, validate_images

__all__ = ["ImageStatistics", "VARIANTS", "fit_memory"]

#: Whitening variants understood by :meth:`ImageStatistics.whiten`.
VARIANTS: tuple[str, ...] = ("exact", "principal")

_FORMAT = "vicious.metrics.ImageStatistics"
_FORMAT_VERSION = "1"

Device = str | torch.device | None

#: Total pixel variance below which images count as constant: round-off of a mean of equal
#: values is ~1e-17, so ~1e-33 in variance; a one-level uint8 difference in one of a million
#: images is ~1e-11.
_NO_VARIANCE = 1e-20

#: Peak memory of a fit in float64 D×D matrices: Σ plus eigh's workspace (measured, module docstring).
_FIT_MATRICES = 3.5


def fit_memory(num_features: int) -> int:
    """Bytes a fit on images of ``num_features`` = C·H·W pixels needs at its peak."""
    return int(_FIT_MATRICES * 8 * num_features * num_features)


def _device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes, or None where it cannot be told."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, RuntimeError, AttributeError):
        pass
    return None


def _check_fit_memory(shape: tuple[int, ...], device: torch.device, memory_limit: int | None) -> None:
    d = int(math.prod(shape))
    need = fit_memory(d)
    limit = memory_limit if memory_limit is not None else _device_memory(device)
    if limit is not None and need > limit:
        side = max(8, int(math.sqrt(math.sqrt(limit / (_FIT_MATRICES * 8)) / shape[0])) // 8 * 8)
        raise ValueError(
            f"ImageStatistics.fit on {shape[0]}x{shape[1]}x{shape[2]} images (D = {d:,} pixels) would need about "
            f"{format_bytes(need)} for the D x D pixel covariance, more than "
            f"{'memory_limit' if memory_limit is not None else f'the memory of {device}'} ({format_bytes(limit)}); "
            f"use smaller images (about {side}x{side} or less, e.g. data.image_size={side})"
        )


def _check_fraction(variance_fraction: Any) -> float:
    if isinstance(variance_fraction, bool) or not isinstance(variance_fraction, (int, float)):
        raise ValueError(
            f"variance_fraction must be a number in (0, 1], got {type(variance_fraction).__name__}"
        )
    f = float(variance_fraction)
    if not (0.0 < f <= 1.0):  # also rejects NaN
        raise ValueError(f"variance_fraction must lie in (0, 1], got {variance_fraction!r}; e.g. 0.9")
    return f


def _check_variant(variant: Any) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def _as_batch(item: Any, index: int) -> torch.Tensor:
    """A batch may be a tensor or a (images, labels, ...) tuple/list from a DataLoader."""
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        item = item[0]
    name = f"batch {index}"
    t = check_tensor(item, name)
    if t.dim() != 4:
        raise ValueError(
            f"{name} must have 4 dimensions (N, C, H, W), got {t.dim()} with shape {tuple(t.shape)}; "
            f"yield image batches (or (images, labels) tuples)"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); every dimension must be at least 1")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise ValueError(
            f"{name} has dtype {t.dtype}; expected float images in [0, 1] or uint8 images in [0, 255]"
        )
    check_finite(t, name)
    check_unit_range(t, name)
    return t


def _reverse_columns_(matrix: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Reverse the order of ``matrix``'s columns in place (extra memory: rows × 2·block)."""
    d = matrix.shape[1]
    for start in range(0, d // 2, block):
        stop = min(start + block, d // 2)
        left, right = matrix[:, start:stop], matrix[:, d - stop : d - start]
        left_before = left.clone()
        left.copy_(right.flip(1))
        right.copy_(left_before.flip(1))
    return matrix


def _iter_batches(images_or_batches: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images_or_batches, torch.Tensor):
        t = images_or_batches
        if t.dim() != 4:
            raise ValueError(
                f"images must have 4 dimensions (N, C, H, W), got {t.dim()} with shape {tuple(t.shape)}; "
                f"pass one (N, C, H, W) tensor or an iterable of such batches"
            )
        if t.shape[0] == 0:
            raise ValueError("images is empty (N = 0); need at least 2 images")
        for start in range(0, t.shape[0], batch_size):
            yield t[start : start + batch_size]
        return
    if isinstance(images_or_batches, (str, bytes, dict)) or not hasattr(images_or_batches, "__iter__"):
        raise ValueError(
            f"images_or_batches must be an (N, C, H, W) tensor or an iterable of such batches, "
            f"got {type(images_or_batches).__name__}"
        )
    yield from images_or_batches


class ImageStatistics:
    r"""Mean and covariance eigendecomposition of a population of images.

    Build with :meth:`fit` or :meth:`load`; the constructor is for those two.

    Attributes (read-only properties):
        mean: :math:`(D,)` float64 per-pixel mean :math:`\bar x`, flattened C-major.
        eigenvalues: :math:`(D,)` float64 eigenvalues of :math:`\Sigma` in
            decreasing order, clamped at 0.
        eigenvectors: :math:`(D, r)` float64, the eigenvectors of the ``rank``
            kept eigenvalues (columns in the same order).
        rank: :math:`r`, the number of eigenvalues above the pseudo-inverse cut-off.
        count: number of images fitted.
        shape: ``(C, H, W)``; num_features: :math:`D`.
    """

    def __init__(
        self,
        *,
        mean: torch.Tensor,
        eigenvalues: torch.Tensor,
        eigenvectors: torch.Tensor,
        count: int,
        shape: tuple[int, int, int],
        rtol: float,
    ) -> None:
        d = int(math.prod(shape))
        if mean.shape != (d,) or eigenvalues.shape != (d,):
            raise ValueError(
                f"mean and eigenvalues must have shape ({d},) for image shape {tuple(shape)}, "
                f"got {tuple(mean.shape)} and {tuple(eigenvalues.shape)}"
            )
        if eigenvectors.dim() != 2 or eigenvectors.shape[0] != d or eigenvectors.shape[1] > d:
            raise ValueError(f"eigenvectors must have shape ({d}, r) with r <= {d}, got {tuple(eigenvectors.shape)}")
        self._mean = mean.to(torch.float64)
        self._eigenvalues = eigenvalues.to(torch.float64)
        self._eigenvectors = eigenvectors.to(torch.float64)
        self._count = int(count)
        self._shape = tuple(int(s) for s in shape)
        self._rtol = float(rtol)
        rank = int(eigenvectors.shape[1])
        kept = self._eigenvalues[:rank]
        if rank and bool((kept <= 0).any()):
            raise ValueError("every kept eigenvalue must be positive; the statistics are corrupt")
        # Everything later calls need, precomputed once:
        self._inv_sqrt = kept.rsqrt()  # (r,) Λ_r^{-1/2}
        total = float(self._eigenvalues.sum())
        self._total_variance = total
        # cumulative explained-variance fraction, on the CPU (D floats)
        ev = self._eigenvalues.detach().cpu()
        self._cumulative = ev.cumsum(0) / total if total > 0 else torch.zeros_like(ev)

    # ------------------------------------------------------------------ fit
    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        images_or_batches: torch.Tensor | Iterable[Any],
        *,
        device: Device = None,
        batch_size: int = 1024,
        rtol: float | None = None,
        memory_limit: int | None = None,
    ) -> ImageStatistics:
        r"""Fit the mean and covariance of a set of images by streaming over it.

        Args:
            images_or_batches: One tensor :math:`(N, C, H, W)`, or any iterable
                of such batches (a ``DataLoader`` yielding ``(images, labels)``
                tuples works: the first element is used). Float images in
                ``[0, 1]``, or uint8 images in ``[0, 255]`` (divided by 255 per
                batch). All batches must share ``(C, H, W)``.
            device: Where to accumulate and decompose (e.g. ``"cuda"``); default:
                the device of the first batch. The statistics stay there.
            batch_size: Rows per step when a single tensor is given.
            rtol: Relative eigenvalue cut-off of the pseudo-inverse; default
                :math:`D \cdot \epsilon_{float64}`, torch/numpy's pinv default.
            memory_limit: Bytes the fit may use at its peak (:func:`fit_memory`);
                default: the total memory of ``device``.

        Returns:
            The fitted :class:`ImageStatistics`.

        Raises:
            ValueError: On invalid batches, mismatched batch shapes, fewer than 2
                images, images too large for the memory (checked before anything
                is allocated), images that do not vary (the risk is then
                undefined), or a bad argument.

        Notes:
            Accumulates the count, the sum and :math:`\sum_b X_b^\top X_b` in
            float64 (after subtracting the first batch's mean, which avoids
            cancellation), so the dataset is never held as one float64 matrix.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if rtol is not None and (not isinstance(rtol, (int, float)) or not (0 <= float(rtol) < 1)):
            raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
        if memory_limit is not None and (isinstance(memory_limit, bool) or not isinstance(memory_limit, int)
                                         or memory_limit < 1):
            raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit!r}")

        shape: tuple[int, int, int] | None = None
        dev: torch.device | None = torch.device(device) if device is not None else None
        n = 0
        ref: torch.Tensor | None = None
        total = gram = torch.empty(0)  # allocated with the first batch, once D is known
        for i, item in enumerate(_iter_batches(images_or_batches, batch_size)):
            b = _as_batch(item, i)
            if shape is None:
                channels, height, width = (int(s) for s in b.shape[1:])  # _as_batch: 4 dimensions
                shape = (channels, height, width)
                if dev is None:
                    dev = b.device
                _check_fit_memory(shape, dev, memory_limit)  # before any D×D allocation
            elif tuple(b.shape[1:]) != shape:
                raise ValueError(
                    f"batch {i} has image shape {tuple(b.shape[1:])} but earlier batches have {shape}; "
                    f"all images must share (C, H, W)"
                )
            xb = b.to(device=dev).to(torch.float64)
            xb = xb.clone() if xb is b else xb  # below works in place, never on the caller's tensor
            if b.dtype == torch.uint8:
                xb.div_(255.0)
            xb = xb.clamp_(0.0, 1.0).reshape(xb.shape[0], -1)
            if ref is None:
                d = xb.shape[1]
                ref = xb.mean(dim=0)
                total = torch.zeros(d, dtype=torch.float64, device=dev)
                # Column-major (a transposed view), LAPACK's layout: eigh overwrites it in place below.
                gram = torch.zeros(d, d, dtype=torch.float64, device=dev).mT
            xb.sub_(ref)
            total += xb.sum(dim=0)
            gram.addmm_(xb.T, xb)  # Σ_b X_bᵀ X_b, in place
            n += xb.shape[0]
            del xb

        if shape is None or n < 2:
            raise ValueError(f"ImageStatistics.fit needs at least 2 images, got {n}")
        assert ref is not None and total is not None and gram is not None
        d = int(ref.shape[0])
        shifted_mean = total / n
        # Population covariance (1/N). The reconstruction risk is a ratio of two
        # Mahalanobis distances under the same Σ⁺, so it does not depend on the
        # normalisation (1/N vs 1/(N-1) scales both distances alike), and the
        # relative pinv cut-off is scale-free too.
        # Everything in place from here: Σ is the only D×D matrix besides eigh's workspace.
        gram.div_(n)
        gram.addr_(shifted_mean, shifted_mean, alpha=-1.0)
        mean = ref + shifted_mean
        del total, ref
        if not float(gram.diagonal().sum()) > _NO_VARIANCE:
            raise ValueError(
                f"the {n} images do not vary (each pixel has the same value in all of them), so the pixel "
                "covariance is zero and the reconstruction risk undefined; fit on a population of different images"
            )

        evals = torch.empty(d, dtype=torch.float64, device=dev)
        torch.linalg.eigh(gram, out=(evals, gram))  # eigenvectors overwrite Σ; ascending
        evecs = _reverse_columns_(gram)
        evals = evals.flip(0).clamp_min(0.0)
        if rtol is None:
            rtol = d * torch.finfo(torch.float64).eps
        lam_max = float(evals[0])
        rank = int((evals > rtol * lam_max).sum()) if lam_max > 0 else 0
        # the top-`rank` eigenvectors, in decreasing order; a D×rank copy only if rank < D
        kept = evecs[:, :rank] if rank == d else evecs[:, :rank].clone()
        del evecs, gram
        return cls(mean=mean, eigenvalues=evals, eigenvectors=kept, count=n, shape=shape, rtol=float(rtol))

    # ----------------------------------------------------------- properties
    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def mean_image(self) -> torch.Tensor:
        """The mean as an image ``(C, H, W)`` (float64)."""
        return self._mean.reshape(self._shape)

    @property
    def eigenvalues(self) -> torch.Tensor:
        return self._eigenvalues

    @property
    def eigenvectors(self) -> torch.Tensor:
        return self._eigenvectors

    @property
    def rank(self) -> int:
        return int(self._eigenvectors.shape[1])

    @property
    def count(self) -> int:
        return self._count

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def num_features(self) -> int:
        return int(self._mean.shape[0])

    @property
    def rtol(self) -> float:
        return self._rtol

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def total_variance(self) -> float:
        """Trace of :math:`\\Sigma` (sum of the eigenvalues)."""
        return self._total_variance

    def __repr__(self) -> str:
        return (
            f"ImageStatistics(shape={self.shape}, count={self.count}, rank={self.rank}, "
            f"device={self.device})"
        )

    def to(self, device: Device) -> ImageStatistics:
        """A copy on ``device`` (this object is left unchanged)."""
        dev = torch.device(device) if device is not None else self.device
        return ImageStatistics(
            mean=self._mean.to(dev),
            eigenvalues=self._eigenvalues.to(dev),
            eigenvectors=self._eigenvectors.to(dev),
            count=self._count,
            shape=self.shape,
            rtol=self._rtol,
        )

    # ------------------------------------------------------------ queries
    def components_for(self, variance_fraction: float = 0.9) -> int:
        """Number of leading eigen-directions holding ``variance_fraction`` of the variance.

        The smallest :math:`k` with :math:`\\sum_{j<k} \\lambda_j \\ge f \\sum_j \\lambda_j`,
        capped at :attr:`rank` (``variance_fraction=1`` gives the exact variant's
        directions). 0 only if the fitted images have no variance at all.

        Raises:
            ValueError: unless ``0 < variance_fraction <= 1``.
        """
        f = _check_fraction(variance_fraction)
        if self.rank == 0:
            return 0
        # a relative slack of 1e-12 keeps f = 1 from missing the total by round-off
        k = int((self._cumulative < f * (1.0 - 1e-12)).sum()) + 1
        return min(k, self.rank)

    def num_components(self, variant: str, variance_fraction: float = 0.9) -> int:
        """Directions a variant keeps: all :attr:`rank` for ``"exact"``, else
        :meth:`components_for` ``(variance_fraction)`` for ``"principal"``."""
        _check_variant(variant)
        if variant == "exact":
            _check_fraction(variance_fraction)  # validated for a uniform interface
            return self.rank
        return self.components_for(variance_fraction)

    def check_images(self, x: Any, name: str = "x") -> torch.Tensor:
        """Validate an image batch and that its ``(C, H, W)`` matches :attr:`shape`."""
        t = validate_images(x, name)
        if tuple(t.shape[1:]) != self.shape:
            raise ValueError(
                f"{name} has image shape {tuple(t.shape[1:])} but the statistics were fitted on "
                f"{self.shape}; fit ImageStatistics on images of the same size"
            )
        return t

    def project(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        """Whitened coordinates: ``(M, D)`` float64 rows (already centred or differenced) ->
        ``(M, k)`` in the first ``k`` directions, each divided by its standard deviation."""
        return (flat @ self._eigenvectors[:, :k]).mul_(self._inv_sqrt[:k])

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(M, C, H, W)`` -> float64 rows ``(M, D)`` on the statistics' device, clamped
        to [0, 1] (unchecked: :meth:`check_images` validates)."""
        flat = x.to(device=self.device).to(torch.float64)
        # In place (one (M, D) float64 temporary fewer), but never on the caller's tensor.
        flat = flat.clamp(0.0, 1.0) if flat is x else flat.clamp_(0.0, 1.0)
        return flat.reshape(x.shape[0], -1)

    @torch.no_grad()
    def whiten(
        self,
        x: torch.Tensor,
        variant: str = "exact",
        variance_fraction: float = 0.9,
        *,
        chunk_size: int = 4096,
    ) -> torch.Tensor:
        r"""Whitened coordinates :math:`\Lambda_k^{-1/2} V_k^\top (x - \bar x)`.

        Euclidean distances between whitened images are Mahalanobis distances:
        under :math:`\Sigma^+` for ``variant="exact"``, restricted to the
        principal subspace holding ``variance_fraction`` of the variance for
        ``variant="principal"`` (``variance_fraction`` is ignored for ``exact``).

        Args:
            x: Images :math:`(N, C, H, W)` in ``[0, 1]`` with ``(C, H, W) == shape``.
            variant: ``"exact"`` or ``"principal"``.
            variance_fraction: In ``(0, 1]``, for ``"principal"``.
            chunk_size: Rows per matrix product (bounds memory).

        Returns:
            Float64 tensor :math:`(N, k)` on ``x``'s device; ``k`` = :attr:`rank`
            (exact) or :meth:`components_for` (principal); columns in order of
            decreasing variance. Computed on :attr:`device`.
        """
        t = self.check_images(x)
        k = self.num_components(variant, variance_fraction)
        out = []
        for start in range(0, t.shape[0], max(1, int(chunk_size))):
            flat = self.flatten(t[start : start + chunk_size]) - self._mean
            out.append(self.project(flat, k))
        return torch.cat(out).to(t.device)

    # ----------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> None:
        """Write to a ``.safetensors`` file (tensors plus metadata; no pickle)."""
        from safetensors.torch import save_file

        tensors = {
            "mean": self._mean.detach().cpu().contiguous(),
            "eigenvalues": self._eigenvalues.detach().cpu().contiguous(),
            "eigenvectors": self._eigenvectors.detach().cpu().contiguous(),
        }
        metadata = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "count": str(self._count),
            "shape": ",".join(str(s) for s in self.shape),
            "rtol": repr(self._rtol),
        }
        save_file(tensors, os.fspath(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: Device = None) -> ImageStatistics:
        """Read a file written by :meth:`save`, onto ``device`` (default CPU).

        Raises:
            ValueError: If the file is not a saved :class:`ImageStatistics`.
        """
        from safetensors import safe_open

        tensors = {}
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{os.fspath(path)} is not a saved ImageStatistics (format {meta.get('format')!r})")
            if meta.get("version") != _FORMAT_VERSION:
                raise ValueError(f"{os.fspath(path)} has ImageStatistics format version {meta.get('version')!r}, expected {_FORMAT_VERSION}")
            for key in ("mean", "eigenvalues", "eigenvectors"):
                if key not in f.keys():
                    raise ValueError(f"{os.fspath(path)} lacks the tensor {key!r}")
                tensors[key] = f.get_tensor(key)
        try:
            shape = tuple(int(s) for s in meta["shape"].split(","))
            count = int(meta["count"])
            rtol = float(meta["rtol"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)} has invalid ImageStatistics metadata: {exc}") from None
        if len(shape) != 3:
            raise ValueError(f"{os.fspath(path)} stores image shape {shape}, expected (C, H, W)")
        stats = cls(count=count, shape=shape, rtol=rtol, **tensors)  # type: ignore[arg-type]
        return stats.to(device) if device is not None else stats
