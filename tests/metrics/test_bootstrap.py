"""Percentile bootstrap of the mean."""

import numpy as np
import pytest
import torch

from vicious.metrics import bootstrap_ci


def test_contains_mean_deterministic_and_narrows():
    rng = np.random.default_rng(0)
    small = rng.normal(3.0, 2.0, size=50)
    large = rng.normal(3.0, 2.0, size=5000)
    lo, hi = bootstrap_ci(torch.from_numpy(small))
    assert lo < small.mean() < hi
    assert (lo, hi) == bootstrap_ci(small.tolist())  # same seed, same interval, any input form
    assert (lo, hi) != bootstrap_ci(small, seed=1)
    lo2, hi2 = bootstrap_ci(large)
    assert lo2 < large.mean() < hi2
    # widths follow the normal approximation 2·z·s/√N (within 15%), so ~10× narrower at 100× N
    for v, (a, b) in ((small, (lo, hi)), (large, (lo2, hi2))):
        expected = 2 * 1.959964 * v.std(ddof=0) / np.sqrt(len(v))
        assert (b - a) == pytest.approx(expected, rel=0.15)
    assert (hi2 - lo2) < (hi - lo) / 5


def test_confidence_and_edge_cases():
    v = np.random.default_rng(1).random(200)
    a90 = bootstrap_ci(v, confidence=0.9)
    a99 = bootstrap_ci(v, confidence=0.99)
    assert a99[0] < a90[0] < a90[1] < a99[1]
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert bootstrap_ci(torch.full((7,), 4.0)) == pytest.approx((4.0, 4.0))


@pytest.mark.parametrize(
    "values, kwargs",
    [
        ([], {}),
        ([[1.0, 2.0]], {}),
        ([1.0, float("nan")], {}),
        ("abc", {}),
        ([1.0, 2.0], {"confidence": 1.0}),
        ([1.0, 2.0], {"num_resamples": 0}),
        ([1.0, 2.0], {"seed": 0.5}),
    ],
)
def test_errors(values, kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(values, **kwargs)
