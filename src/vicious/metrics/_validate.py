"""The one input validator shared by every metric in :mod:`vicious.metrics`.

Every public metric calls into this module before computing anything, so that a
bad input fails early with a :class:`ValueError` whose one-line message names
the problem *and* the fix, instead of an ``AssertionError`` deep inside piq, a
``RuntimeError`` from a matmul, or a silent NaN.

Conventions checked here (see ``docs/design.md``, "Metrics"):

* images are ``torch.Tensor`` of shape ``(N, C, H, W)`` with ``N, C, H, W >= 1``;
* a floating dtype (float16, bfloat16, float32, float64); half precision is
  computed in float32, float64 stays float64;
* every value finite and inside ``[0, 1]`` up to :data:`RANGE_TOLERANCE`
  (values within the tolerance are clamped to ``[0, 1]`` before use);
* a pair ``(x, x_rec)`` has identical shapes and lives on one device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "RANGE_TOLERANCE",
    "check_tensor",
    "check_finite",
    "compute_dtype",
    "validate_images",
    "validate_pair",
    "prepare_images",
    "prepare_pair",
]

#: How far (absolute) a value may sit outside ``[0, 1]`` and still be accepted
#: (then clamped). Covers float32 round-off from normalise/denormalise round
#: trips and float16 storage; anything further out is a real bug upstream.
RANGE_TOLERANCE: float = 1e-4


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(t: object, name: str) -> torch.Tensor:
    """Raise unless ``t`` is a :class:`torch.Tensor`; return it."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor, got {type(t).__name__}; "
            f"wrap it with torch.as_tensor({name}, dtype=torch.float32)"
        )
    return t


def check_float(t: torch.Tensor, name: str) -> None:
    """Raise unless ``t`` has a real floating dtype."""
    if not t.is_floating_point():
        hint = (
            f"convert uint8 images with {name}.float() / 255"
            if t.dtype == torch.uint8
            else f"convert with {name}.float() (values must already lie in [0, 1])"
        )
        raise ValueError(
            f"{name} has dtype {t.dtype}; expected a floating-point tensor "
            f"(float16, bfloat16, float32 or float64): {hint}"
        )


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` holds a NaN or an infinity."""
    t = t.detach()
    if t.numel() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite value(s); "
            f"remove or repair them (e.g. torch.nan_to_num) before measuring"
        )


def check_unit_range(t: torch.Tensor, name: str, tolerance: float = RANGE_TOLERANCE) -> None:
    """Raise if a value of ``t`` lies outside ``[0, 1]`` by more than ``tolerance``."""
    if not t.numel():
        return
    t = t.detach()
    lo = float(t.amin())
    hi = float(t.amax())
    if lo < -tolerance or hi > 1.0 + tolerance:
        raise ValueError(
            f"{name} has values in [{lo:.6g}, {hi:.6g}], outside [0, 1] "
            f"(tolerance {tolerance:g}); images must be scaled to [0, 1] "
            f"(divide uint8 by 255, undo any normalisation, or clamp)"
        )


def _check_ndim4(t: torch.Tensor, name: str) -> None:
    if t.dim() != 4:
        if t.dim() == 3:
            fix = (
                f"add the missing dimension: {name}.unsqueeze(0) for one C×H×W image, "
                f"{name}.unsqueeze(1) for N single-channel H×W images"
            )
        elif t.dim() == 2:
            fix = f"for one H×W grey image use {name}[None, None]"
        else:
            fix = "reshape it to (N, C, H, W)"
        raise ValueError(
            f"{name} must have 4 dimensions (N, C, H, W), got {t.dim()} with shape {_shape(t)}; {fix}"
        )


def _check_nonempty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {_shape(t)}); every dimension of (N, C, H, W) must be at least 1"
        )


def _check_min_size(t: torch.Tensor, name: str, min_size: int, what: str) -> None:
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if h < min_size or w < min_size:
        raise ValueError(
            f"{name} is {h}×{w} pixels, smaller than the {min_size}×{min_size} {what}; "
            f"use images of at least {min_size}×{min_size} (e.g. resize or pad them)"
        )


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype metrics compute in: float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def validate_images(
    x: object,
    name: str = "x",
    *,
    min_size: int | None = None,
    min_size_what: str = "SSIM window",
    check_range: bool = True,
) -> torch.Tensor:
    """Validate one image batch ``(N, C, H, W)`` in ``[0, 1]``; return it unchanged.

    Raises:
        ValueError: not a tensor, wrong ndim, empty, non-float dtype, NaN/Inf,
            values outside ``[0, 1]`` beyond :data:`RANGE_TOLERANCE`, or
            ``H``/``W`` below ``min_size``.
    """
    t = check_tensor(x, name)
    _check_ndim4(t, name)
    _check_nonempty(t, name)
    check_float(t, name)
    if min_size is not None:
        _check_min_size(t, name, min_size, min_size_what)
    check_finite(t, name)
    if check_range:
        check_unit_range(t, name)
    return t


def validate_pair(
    x: object,
    x_rec: object,
    names: Sequence[str] = ("x", "x_rec"),
    *,
    min_size: int | None = None,
    min_size_what: str = "SSIM window",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an (original, reconstruction) pair of image batches.

    Both must pass :func:`validate_images`, have identical shapes and share a
    device. Their dtypes may differ (they are promoted by :func:`prepare_pair`).
    """
    a_name, b_name = names
    a = check_tensor(x, a_name)
    b = check_tensor(x_rec, b_name)
    _check_ndim4(a, a_name)
    _check_ndim4(b, b_name)
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, got {_shape(a)} and {_shape(b)}; "
            f"pair each image with its own reconstruction"
        )
    if a.device != b.device:
        raise ValueError(
            f"{a_name} is on {a.device} but {b_name} is on {b.device}; "
            f"move both to one device with .to(device)"
        )
    validate_images(a, a_name, min_size=min_size, min_size_what=min_size_what)
    validate_images(b, b_name, min_size=min_size, min_size_what=min_size_what)
    return a, b


def prepare_images(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cast an already validated batch to its compute dtype and clamp to ``[0, 1]``."""
    dtype = dtype or compute_dtype(x)
    return x.to(dtype).clamp(0.0, 1.0)


def prepare_pair(
    x: object,
    x_rec: object,
    names: Sequence[str] = ("x", "x_rec"),
    *,
    min_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair, promote both to one compute dtype and clamp to ``[0, 1]``."""
    a, b = validate_pair(x, x_rec, names, min_size=min_size)
    dtype = compute_dtype(a, b)
    return prepare_images(a, dtype), prepare_images(b, dtype)
