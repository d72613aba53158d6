"""Property-based: every metric either returns finite results of the right shape or
raises ValueError, never another exception; and valid inputs never raise.

Deterministic by default (derandomize); set VICIOUS_HYPOTHESIS_EXAMPLES=500 and
VICIOUS_HYPOTHESIS_RANDOM=1 to explore more.
"""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vicious.metrics import (
    RANGE_TOLERANCE,
    ImageStatistics,
    accuracy,
    bootstrap_ci,
    mse,
    psnr,
    psnr_from_mean_mse,
    psnr_from_mse,
    reconstruction_risk,
    reidentification,
    ssim,
    summarise_risk,
)

SETTINGS = settings(
    max_examples=int(os.environ.get("VICIOUS_HYPOTHESIS_EXAMPLES", "50")),
    deadline=None,
    derandomize=not os.environ.get("VICIOUS_HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPES = FLOATS + [torch.int32, torch.int64, torch.uint8, torch.bool]
STATS_SHAPE = (1, 11, 11)

# shapes: anything small, or a plausible image batch (often valid, sometimes tiny for SSIM)
any_shape = st.lists(st.integers(0, 12), min_size=0, max_size=5).map(tuple)
image_shape = st.tuples(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(9, 13), st.integers(9, 13))
stats_shape = st.integers(1, 4).map(lambda n: (n,) + STATS_SHAPE)
shapes = st.one_of(any_shape, image_shape, image_shape, stats_shape)


@st.composite
def tensors(draw, shape=None, max_dim_size=None, clean=False):
    """A tensor of any dtype and values; ``clean`` keeps it a float tensor in [0, 1]."""
    if shape is None:
        shape = draw(shapes)
    if max_dim_size is not None:
        shape = tuple(min(s, max_dim_size) for s in shape)
    dtype = draw(st.sampled_from(FLOATS if clean else FLOATS + DTYPES))
    ranges = [(0.0, 1.0), (-RANGE_TOLERANCE / 2, 1 + RANGE_TOLERANCE / 2)]
    if not clean:
        ranges += [(-0.5, 1.5), (0.0, 255.0), (-1e30, 1e30)]
    lo, hi = draw(st.sampled_from(ranges))
    special = None if clean else draw(st.sampled_from([None, math.nan, math.inf, -math.inf]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    if special is not None and t.numel():
        t.view(-1)[seed % t.numel()] = special
    if dtype in FLOATS:
        return t.to(dtype)
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1e6, 1e6).to(dtype)


@st.composite
def pairs(draw):
    clean = draw(st.booleans())  # half the pairs are clean float images in [0, 1]
    x = draw(tensors(clean=clean))
    same = clean or draw(st.booleans())  # mostly the same shape
    y = draw(tensors(shape=tuple(x.shape), clean=clean)) if same else draw(tensors())
    return x, y


def valid_images(t: torch.Tensor, min_size: int = 1) -> bool:
    if t.dim() != 4 or t.numel() == 0 or not t.is_floating_point():
        return False
    if t.shape[-1] < min_size or t.shape[-2] < min_size:
        return False
    v = t.double()
    return bool(torch.isfinite(v).all()) and float(v.min()) >= -RANGE_TOLERANCE and float(v.max()) <= 1 + RANGE_TOLERANCE


def valid_pair(x, y, min_size=1):
    return x.shape == y.shape and valid_images(x, min_size) and valid_images(y, min_size)


def outcome(fn, *args, **kwargs):
    """Call; return the result, or None on ValueError. Anything else propagates (fails)."""
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


def assert_finite(t: torch.Tensor, shape):
    assert isinstance(t, torch.Tensor)
    assert tuple(t.shape) == tuple(shape)
    assert t.is_floating_point() and bool(torch.isfinite(t).all())


@pytest.fixture(scope="module")
def stats():
    g = torch.Generator().manual_seed(0)
    return ImageStatistics.fit(torch.rand(60, *STATS_SHAPE, generator=g))


@SETTINGS
@given(pairs())
def test_pixel_metrics(pair):
    x, y = pair
    for fn, min_size in ((mse, 1), (psnr, 1), (ssim, 11)):
        out = outcome(fn, x, y)
        if valid_pair(x, y, min_size):
            assert out is not None, f"{fn.__name__} rejected valid inputs"
        if out is not None:
            assert_finite(out, (x.shape[0],))
    out = outcome(psnr_from_mean_mse, x, y)
    assert (out is not None) == valid_pair(x, y)
    if out is not None:
        assert_finite(out, ())
        assert 0.0 <= float(out) <= 100.0


@SETTINGS
@given(pairs(), st.sampled_from(["exact", "principal", "principal", "bogus"]), st.sampled_from([0.9, 1.0, 0.3, 0.0, 1.5, math.nan]))
def test_reconstruction_risk(stats, pair, variant, fraction):
    x, y = pair
    out = outcome(reconstruction_risk, x, y, stats, variant, fraction)
    ok = valid_pair(x, y) and tuple(x.shape[1:]) == STATS_SHAPE and variant != "bogus" and 0 < fraction <= 1
    assert (out is not None) == ok
    if out is not None:
        assert_finite(out, (x.shape[0],))
        assert bool((out >= 0).all())
        summary = summarise_risk(out)
        assert all(math.isfinite(v) for v in summary.values())


@SETTINGS
@given(pairs(), st.sampled_from(["pixel", "principal"]), st.booleans())
def test_reidentification(stats, pair, space, with_gallery):
    x, y = pair
    gallery = torch.cat([x, y]) if with_gallery and x.shape == y.shape and x.dim() == 4 else None
    out = outcome(reidentification, x, y, gallery=gallery, space=space, stats=stats)
    if valid_pair(x, y) and (space == "pixel" or tuple(x.shape[1:]) == STATS_SHAPE):
        assert out is not None
    if out is not None:
        assert set(out) == {"top1", "top5"}
        assert all(0.0 <= v <= 1.0 for v in out.values())


@SETTINGS
@given(st.booleans().flatmap(lambda clean: tensors(max_dim_size=5, clean=clean)))
def test_fit(images):
    s = outcome(ImageStatistics.fit, images, batch_size=2)
    ok = (valid_images(images) or images.dtype == torch.uint8 and images.dim() == 4 and images.numel() > 0)
    ok = ok and images.shape[0] >= 2
    ok = ok and bool((images != images[:1]).any())  # identical images: R is undefined, fit refuses them
    assert (s is not None) == ok
    if s is not None:
        assert bool(torch.isfinite(s.mean).all() and torch.isfinite(s.eigenvalues).all())
        assert 0 <= s.rank <= s.num_features
        z = s.whiten(images.float() / 255 if images.dtype == torch.uint8 else images, "principal")
        assert_finite(z, (images.shape[0], s.components_for(0.9)))


@SETTINGS
@given(tensors(), st.integers(1, 6), st.sampled_from(["int", "float01", "float", "bool", "int2d"]), st.integers(0, 2**31 - 1))
def test_accuracy(logits, k, label_kind, seed):
    n = logits.shape[0] if logits.dim() else 1
    g = torch.Generator().manual_seed(seed)
    if label_kind == "int":
        labels = torch.randint(-1, k + 1, (n,), generator=g)
    elif label_kind == "float01":
        labels = torch.randint(0, 2, (n, k), generator=g).float()
    elif label_kind == "float":
        labels = torch.rand(n, k, generator=g)
    elif label_kind == "bool":
        labels = torch.rand(n, k, generator=g) > 0.5
    else:
        labels = torch.randint(0, 2, (n, k), generator=g)
    if logits.dim() >= 2:
        logits = logits.reshape(logits.shape[0], -1)[:, :k] if logits.shape[0] else logits
    out = outcome(accuracy, logits, labels)
    if out is not None:
        expected = (n,) if labels.dim() == 1 else tuple(labels.shape)
        assert_finite(out, expected)
        assert bool(((out == 0) | (out == 1)).all())


@SETTINGS
@given(tensors(shape=None), st.sampled_from([0.95, 0.5, 0.0, 1.0, -1.0]))
def test_summaries(values, confidence):
    for fn in (summarise_risk, psnr_from_mse):
        out = outcome(fn, values)
        if out is not None:
            vals = out.values() if isinstance(out, dict) else out.flatten().tolist()
            assert all(math.isfinite(v) for v in vals)
    ci = outcome(bootstrap_ci, values, confidence=confidence, num_resamples=50)
    ok_vals = values.dim() == 1 and values.numel() > 0 and values.dtype != torch.bool and bool(torch.isfinite(values.double()).all())
    assert (ci is not None) == (ok_vals and 0 < confidence < 1)
    if ci is not None:
        lo, hi = ci
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi + 1e-9 * max(1.0, abs(hi))
