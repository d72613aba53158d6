"""Random shapes, dtypes, ranges, NaNs and Infs thrown at the metric and risk functions:
each returns finite results of the documented shape, or raises a ValueError whose
message is one readable line (tests/metrics/test_properties.py checks which inputs
are accepted; this file checks what the user is told)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vicious.metrics import (
    ImageStatistics,
    accuracy,
    bootstrap_ci,
    mse,
    psnr,
    psnr_from_mean_mse,
    reconstruction_risk,
    reidentification,
    ssim,
    summarise_risk,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
IMAGE = (1, 12, 12)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]


@st.composite
def tensors(draw, shape=None, clean=False):
    """Any tensor; ``clean``: a float tensor in [0, 1] without NaN or Inf."""
    if shape is None:
        shape = draw(st.one_of(
            st.lists(st.integers(0, 13), max_size=5).map(tuple),  # anything
            st.tuples(st.integers(1, 4), st.just(1), st.integers(8, 13), st.integers(8, 13)),  # near-images
            st.integers(1, 4).map(lambda n: (n, *IMAGE)),  # images matching the statistics
        ))
    ranges = [(0.0, 1.0)] if clean else [(0.0, 1.0), (-1.0, 2.0), (0.0, 255.0), (-1e30, 1e30)]
    lo, hi = draw(st.sampled_from(ranges))
    special = None if clean else draw(st.sampled_from([None, math.nan, math.inf, -math.inf]))
    seed = draw(st.integers(0, 2**31 - 1))
    t = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * (hi - lo) + lo
    if special is not None and t.numel():
        t.view(-1)[seed % t.numel()] = special
    dtype = draw(st.sampled_from(DTYPES[:4] if clean else DTYPES))
    if not dtype.is_floating_point:
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1e6, 1e6)
    return t.to(dtype)


@st.composite
def pairs(draw):
    clean = draw(st.booleans())  # half the pairs are valid images
    x = draw(tensors(clean=clean))
    y = draw(tensors(shape=tuple(x.shape), clean=clean) if clean else st.one_of(tensors(shape=tuple(x.shape)), tensors()))
    return x, y


@st.composite
def logits_and_labels(draw):
    n, k = draw(st.integers(0, 5)), draw(st.integers(1, 5))
    if draw(st.booleans()):  # plausible: (N, K) logits with (N,) class indices or (N, K) 0/1 attributes
        logits = draw(tensors(shape=(n, k), clean=True)) * 10 - 5
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        labels = (torch.randint(0, k, (n,), generator=g) if draw(st.booleans())
                  else torch.randint(0, 2, (n, k), generator=g).float())
        return logits, labels
    return draw(tensors()), draw(tensors())


@pytest.fixture(scope="module")
def stats():
    return ImageStatistics.fit(torch.rand(40, *IMAGE, generator=torch.Generator().manual_seed(0)))


def _check(fn, *args, shape=None, **kwargs):
    """Call fn: finite results of ``shape``, or a ValueError with a one-line message."""
    try:
        out = fn(*args, **kwargs)
    except ValueError as err:
        message = str(err)
        assert len(message) >= 20 and "\n" not in message, f"{fn.__name__}: unclear error {message!r}"
        assert "tensor(" not in message, f"{fn.__name__}: message dumps a tensor: {message!r}"
        return None
    values = out.values() if isinstance(out, dict) else out
    if isinstance(values, torch.Tensor):
        if shape is not None:
            assert tuple(values.shape) == shape, fn.__name__
        assert values.is_floating_point() and bool(torch.isfinite(values).all()), fn.__name__
    else:
        assert all(math.isfinite(v) for v in values), fn.__name__
    return out


@SETTINGS
@given(pairs())
def test_image_metrics(stats, pair):
    x, y = pair
    n = (x.shape[0],) if x.dim() else None
    for fn in (mse, psnr, ssim):
        _check(fn, x, y, shape=n)
    _check(psnr_from_mean_mse, x, y, shape=())
    for variant in ("exact", "principal"):
        r = _check(reconstruction_risk, x, y, stats, variant, shape=n)
        if r is not None:
            _check(summarise_risk, r)
            _check(bootstrap_ci, r, num_resamples=20)
    _check(reidentification, x, y, space="pixel")


@SETTINGS
@given(logits_and_labels())
def test_accuracy(pair):
    out = _check(accuracy, *pair)
    if out is not None:
        assert bool(((out == 0) | (out == 1)).all())
