"""Reconstruction risk R against direct numpy computations from the formula."""

import numpy as np
import pytest
import torch
from metrics_reference import exact_precision, principal_precision, risk
from scipy.ndimage import gaussian_filter

from vicious.metrics import RISK_EPS, ImageStatistics, reconstruction_risk, summarise_risk

RTOL = 1e-4


def check_against_numpy(train: np.ndarray, x: np.ndarray, x_rec: np.ndarray, fraction: float = 0.9):
    stats = ImageStatistics.fit(torch.from_numpy(train), batch_size=97)
    mean, prec = exact_precision(train)
    ref = risk(x, x_rec, mean, prec)
    ours = reconstruction_risk(torch.from_numpy(x), torch.from_numpy(x_rec), stats, "exact").numpy()
    np.testing.assert_allclose(ours, ref, rtol=RTOL)
    pmean, pprec, k = principal_precision(train, fraction)
    assert stats.components_for(fraction) == k
    pref = risk(x, x_rec, pmean, pprec)
    pours = reconstruction_risk(torch.from_numpy(x), torch.from_numpy(x_rec), stats, "principal", fraction).numpy()
    np.testing.assert_allclose(pours, pref, rtol=RTOL)
    return stats, ours, pours


def noisy(x: np.ndarray, rng, scale: float) -> np.ndarray:
    return np.clip(x + scale * rng.standard_normal(x.shape), 0.0, 1.0)


def test_full_rank_ill_conditioned():
    rng = np.random.default_rng(0)
    d, shape = 48, (3, 4, 4)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = 0.15 * np.logspace(0, -2.5, d)

    def draw(n):
        return np.clip(0.5 + (rng.standard_normal((n, d)) * scales) @ basis.T, 0, 1).reshape(n, *shape)

    train, x = draw(500), draw(30)
    stats, exact, principal = check_against_numpy(train, x, noisy(x, rng, 0.02))
    assert stats.rank == d
    check_against_numpy(train, x, noisy(x, rng, 0.02), fraction=0.5)


def test_rank_deficient_fewer_images_than_pixels():
    rng = np.random.default_rng(1)
    train = rng.random((40, 1, 8, 8))  # N = 40 < D = 64: rank 39
    x = rng.random((25, 1, 8, 8))
    stats, _, _ = check_against_numpy(train, x, noisy(x, rng, 0.1))
    assert stats.rank == 39


def test_rank_deficient_constant_border():
    rng = np.random.default_rng(2)
    train = np.zeros((200, 2, 9, 9))
    train[:, :, 2:7, 2:7] = rng.random((200, 2, 5, 5))  # 50 of 162 pixels vary
    x = np.zeros((20, 2, 9, 9))
    x[:, :, 2:7, 2:7] = rng.random((20, 2, 5, 5))
    x_rec = noisy(x, rng, 0.05)  # also perturbs the border: a null-space direction, ignored
    stats, _, _ = check_against_numpy(train, x, x_rec)
    assert stats.rank == 50


def test_real_fashion_mnist_with_constant_border(fmnist_train, fmnist_test):
    """Real images with a zero border, as the project's padding makes: rank-deficient.

    2×2-pooled to 14×14 and padded to 16×16 (D = 256, at most 196 varying
    pixels), which keeps numpy's reference pinv cheap on a loaded 2-core machine.
    """
    def prep(a):
        pooled = a.reshape(len(a), 14, 2, 14, 2).mean(axis=(2, 4))
        return np.pad(pooled[:, None], ((0, 0), (0, 0), (1, 1), (1, 1)))

    train = prep(fmnist_train[:2000])
    x = prep(fmnist_test[:32])
    rng = np.random.default_rng(3)
    x_rec = np.clip(gaussian_filter(x, sigma=(0, 0, 0.7, 0.7)) + 0.03 * rng.standard_normal(x.shape), 0, 1)
    stats, exact, principal = check_against_numpy(train, x, x_rec)
    assert stats.num_features == 256 and 150 <= stats.rank <= 196
    check_against_numpy(train, x, np.roll(x, 1, axis=0))  # reconstructions that are other real images


def test_real_fashion_mnist_principal_dimension(fmnist_train):
    """The measured caution of docs/method.md: about 84 principal dimensions hold 90% of the
    variance of Fashion-MNIST; 2000 real images padded to 32×32 give a similar count."""
    train = np.pad(fmnist_train[:2000, None], ((0, 0), (0, 0), (2, 2), (2, 2)))
    stats = ImageStatistics.fit(torch.from_numpy(train))
    assert stats.num_features == 1024 and stats.rank <= 784  # the zero border carries no variance
    assert 70 <= stats.components_for(0.9) <= 95


def test_perfect_reconstruction_is_large_but_finite():
    rng = np.random.default_rng(4)
    stats = ImageStatistics.fit(torch.from_numpy(rng.random((100, 1, 4, 4))))
    x = torch.from_numpy(rng.random((5, 1, 4, 4)))
    r = reconstruction_risk(x, x, stats)
    assert torch.isfinite(r).all()
    d_mean = stats.whiten(x).norm(dim=1)
    assert torch.allclose(r, d_mean / RISK_EPS)
    # the mean image as "reconstruction" gives r = 1 exactly
    xbar = stats.mean_image.expand(5, 1, 4, 4)
    assert torch.allclose(reconstruction_risk(x, xbar, stats), torch.ones(5, dtype=torch.float64))


def test_output_dtype_device_and_errors():
    rng = np.random.default_rng(5)
    stats = ImageStatistics.fit(torch.from_numpy(rng.random((50, 1, 4, 4))))
    x = torch.rand(3, 1, 4, 4)
    assert reconstruction_risk(x, x * 0.5, stats).dtype == torch.float32
    assert reconstruction_risk(x.half(), (x * 0.5).half(), stats, "principal").dtype == torch.float32
    with pytest.raises(ValueError, match="fitted on"):
        reconstruction_risk(torch.rand(3, 1, 5, 5), torch.rand(3, 1, 5, 5), stats)
    with pytest.raises(ValueError, match="variant"):
        reconstruction_risk(x, x, stats, variant="pinv")
    with pytest.raises(ValueError, match="variance_fraction"):
        reconstruction_risk(x, x, stats, "principal", 0.0)
    with pytest.raises(ValueError, match="ImageStatistics"):
        reconstruction_risk(x, x, None)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_risk(x, x[:2], stats)


def test_summarise_risk():
    s = summarise_risk(torch.tensor([0.5, 2.0, 1.0, 4.0]))
    assert s == {"mean": 1.875, "median": 1.5, "frac_above_one": 0.5}
    assert summarise_risk(torch.tensor([3.0, 0.2, 1.5]))["median"] == 1.5
    for bad in (torch.tensor([]), torch.ones(2, 2), torch.tensor([1.0, float("inf")]), [1.0]):
        with pytest.raises(ValueError):
            summarise_risk(bad)
