"""SSIM against scikit-image (gaussian_weights, sigma 1.5, population covariance)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from vicious.metrics import SSIM, ssim

TOL = 1e-5


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """skimage SSIM of one (C, H, W) pair; the 2-D call for one channel."""
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    if a.shape[0] == 1:
        return float(structural_similarity(a[0], b[0], **kw))
    return float(structural_similarity(a, b, channel_axis=0, **kw))


def sk_batch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([sk_ssim(a, b) for a, b in zip(x, y)])


def degrade(x: np.ndarray, rng: np.random.Generator, noise: float = 0.08, blur: float = 1.0) -> np.ndarray:
    """A plausible reconstruction: blurred, noisy, clipped."""
    out = np.stack([gaussian_filter(img, sigma=(0, blur, blur)) for img in x])
    return np.clip(out + noise * rng.standard_normal(x.shape), 0.0, 1.0)


@pytest.mark.parametrize("channels, size", [(1, 32), (3, 32), (1, 11), (3, 17)])
def test_random_images_match_skimage(channels, size):
    rng = np.random.default_rng(channels * 100 + size)
    x = rng.random((6, channels, size, size))
    y = np.concatenate([rng.random((3, channels, size, size)), degrade(x[3:], rng, noise=0.05)])
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, sk_batch(x, y), atol=TOL, rtol=0)
    # float32 inputs, still within tolerance of the float64 reference
    ours32 = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float()).numpy()
    np.testing.assert_allclose(ours32, sk_batch(x, y), atol=TOL, rtol=0)


def test_real_fashion_mnist_single_channel(fmnist_test):
    rng = np.random.default_rng(0)
    x28 = fmnist_test[:24, None]  # (24, 1, 28, 28)
    x32 = np.pad(x28, ((0, 0), (0, 0), (2, 2), (2, 2)))  # the project's 32×32 padding
    for x in (x28, x32):
        y = degrade(x, rng)
        ours = ssim(torch.from_numpy(x), torch.from_numpy(y)).numpy()
        ref = sk_batch(x, y)
        np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
        assert 0.2 < ref.mean() < 0.95  # a realistic, non-degenerate range
        # reconstructions that are other real images of the set
        other = np.roll(x, 1, axis=0)
        np.testing.assert_allclose(
            ssim(torch.from_numpy(x), torch.from_numpy(other)).numpy(), sk_batch(x, other), atol=TOL, rtol=0
        )


def test_real_fashion_mnist_three_channels(fmnist_test):
    rng = np.random.default_rng(1)
    # three different real images as the R, G, B channels of one picture
    x = np.stack([fmnist_test[0:16], fmnist_test[16:32], fmnist_test[32:48]], axis=1)  # (16, 3, 28, 28)
    y = degrade(x, rng, noise=0.05, blur=0.7)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, sk_batch(x, y), atol=TOL, rtol=0)
    # the mean over channels, as skimage does
    per_channel = np.stack([sk_batch(x[:, c : c + 1], y[:, c : c + 1]) for c in range(3)], axis=1)
    np.testing.assert_allclose(ours, per_channel.mean(axis=1), atol=TOL, rtol=0)


def test_identity_and_symmetry():
    x = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    y = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ssim(x, y), ssim(y, x))
    assert torch.equal(SSIM()(x, y), ssim(x, y))


def test_ssim_is_differentiable():
    x = torch.rand(2, 1, 16, 16)
    y = torch.rand(2, 1, 16, 16, requires_grad=True)
    (1 - ssim(x, y)).mean().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@pytest.mark.parametrize("channels, size", [(1, 32), (3, 32), (1, 11), (3, 17)])
def test_separable_form_matches_skimage_and_its_gradient_matches_piq(channels, size):
    """The training loss's SSIM (two 1-D passes) is the metric's SSIM: same values as
    scikit-image, same gradient as piq's 2-D window."""
    import piq

    from vicious.metrics import ssim_separable

    rng = np.random.default_rng(channels * 7 + size)
    x = rng.random((6, channels, size, size))
    y = np.concatenate([rng.random((3, channels, size, size)), degrade(x[3:], rng, noise=0.05)])
    ours = ssim_separable(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, sk_batch(x, y), atol=TOL, rtol=0)

    a = torch.from_numpy(y).float().requires_grad_(True)
    b = torch.from_numpy(y).float().requires_grad_(True)
    target = torch.from_numpy(x).float()
    ssim_separable(a, target).sum().backward()
    piq.ssim(b, target, data_range=1.0, kernel_size=11, kernel_sigma=1.5, downsample=False,
             reduction="none").sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)
