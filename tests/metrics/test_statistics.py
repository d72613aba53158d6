"""ImageStatistics: streaming fit, eigen-structure, whitening, save/load."""

import numpy as np
import pytest
import torch
from metrics_reference import flat

from vicious.metrics import ImageStatistics, reconstruction_risk


def correlated_images(n: int, shape=(3, 4, 4), seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] with a strongly decaying covariance spectrum (full rank)."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = 0.15 * np.logspace(0, -3, d)  # std from 0.15 down to 1.5e-4
    z = rng.standard_normal((n, d)) * scales
    x = np.clip(0.5 + z @ basis.T, 0.0, 1.0)
    return torch.from_numpy(x.reshape(n, *shape))


@pytest.fixture(scope="module")
def train():
    return correlated_images(400)


@pytest.fixture(scope="module")
def stats(train):
    return ImageStatistics.fit(train)


def test_mean_and_covariance_match_numpy(train, stats):
    t = flat(train.numpy())
    np.testing.assert_allclose(stats.mean.numpy(), t.mean(axis=0), rtol=0, atol=1e-12)
    cov = np.cov(t, rowvar=False, bias=True)  # population covariance, as fitted
    assert stats.rank == stats.num_features == 48
    v, lam = stats.eigenvectors.numpy(), stats.eigenvalues.numpy()
    np.testing.assert_allclose((v * lam) @ v.T, cov, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(cov)[::-1], rtol=1e-8, atol=1e-15)
    assert np.all(np.diff(lam) <= 0)
    assert stats.shape == (3, 4, 4) and stats.count == 400
    assert stats.mean_image.shape == (3, 4, 4)


def test_streaming_fit_equals_whole_tensor_fit(train, stats):
    # uneven batches, a DataLoader-like iterable of (images, labels), and a generator
    cuts = [0, 7, 8, 150, 151, 400]
    batches = [train[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    loader = [(b, torch.zeros(len(b))) for b in batches]
    for source in (batches, loader, (b for b in batches), train.float()):
        other = ImageStatistics.fit(source, batch_size=33)
        assert other.count == 400 and other.rank == stats.rank
        tol = 1e-6 if isinstance(source, torch.Tensor) else 1e-12  # float32 copy vs float64
        np.testing.assert_allclose(other.mean.numpy(), stats.mean.numpy(), atol=tol)
        np.testing.assert_allclose(other.eigenvalues.numpy(), stats.eigenvalues.numpy(), rtol=1e-4, atol=1e-12)
    # small batch_size on one tensor
    small = ImageStatistics.fit(train, batch_size=3)
    np.testing.assert_allclose(small.eigenvalues.numpy(), stats.eigenvalues.numpy(), rtol=1e-9, atol=1e-15)
    x = correlated_images(20, seed=5)
    y = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    for variant in ("exact", "principal"):
        np.testing.assert_allclose(
            reconstruction_risk(x, y, small, variant).numpy(),
            reconstruction_risk(x, y, stats, variant).numpy(),
            rtol=1e-7,
        )


def test_uint8_batches_are_scaled():
    rng = np.random.default_rng(3)
    u8 = torch.from_numpy(rng.integers(0, 256, size=(50, 1, 5, 5), dtype=np.uint8))
    a = ImageStatistics.fit(u8)
    b = ImageStatistics.fit(u8.double() / 255)
    np.testing.assert_allclose(a.mean.numpy(), b.mean.numpy(), atol=1e-14)
    np.testing.assert_allclose(a.eigenvalues.numpy(), b.eigenvalues.numpy(), atol=1e-14)


def test_components_for_matches_cumulative_variance(stats):
    lam = stats.eigenvalues.numpy()
    cum = np.cumsum(lam) / lam.sum()
    for f in (0.1, 0.5, 0.9, 0.99):
        k = stats.components_for(f)
        assert cum[k - 1] >= f and (k == 1 or cum[k - 2] < f)
    assert stats.components_for(1.0) == stats.rank
    assert stats.components_for(1e-9) == 1
    for bad in (0.0, -0.1, 1.5, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match="variance_fraction"):
            stats.components_for(bad)


def test_whiten_gives_identity_covariance_and_mahalanobis_distances(train, stats):
    z = stats.whiten(train, "exact").numpy()
    assert z.shape == (400, 48) and z.dtype == np.float64
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(z.T @ z / 400, np.eye(48), atol=1e-7)
    k = stats.components_for(0.9)
    zp = stats.whiten(train, "principal", 0.9, chunk_size=37).numpy()
    assert zp.shape == (400, k)
    np.testing.assert_allclose(zp, z[:, :k], atol=1e-10)  # a leading slice of the exact coordinates
    with pytest.raises(ValueError, match="variant"):
        stats.whiten(train, "full")
    with pytest.raises(ValueError, match="fitted on"):
        stats.whiten(torch.rand(2, 1, 4, 4))


def test_rank_deficient_statistics():
    rng = np.random.default_rng(7)
    # constant border: only the 6×6 interior of 8×8 varies -> rank 36 of 64
    x = np.full((300, 1, 8, 8), 0.25)
    x[:, :, 1:7, 1:7] = rng.random((300, 1, 6, 6))
    s = ImageStatistics.fit(torch.from_numpy(x))
    assert s.rank == 36 and s.eigenvectors.shape == (64, 36)
    assert float(s.eigenvalues[36:].abs().max()) < 1e-15
    # fewer images than pixels -> rank N - 1
    s2 = ImageStatistics.fit(torch.rand(20, 1, 8, 8, dtype=torch.float64))
    assert s2.rank == 19
    # identical images: no variance at all, so R is undefined: refused, not a silent 0
    with pytest.raises(ValueError, match="do not vary"):
        ImageStatistics.fit(torch.full((5, 1, 4, 4), 0.3))


def test_save_load_roundtrip(tmp_path, stats):
    path = tmp_path / "stats.safetensors"
    stats.save(path)
    loaded = ImageStatistics.load(path)
    for name in ("mean", "eigenvalues", "eigenvectors"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))
    assert (loaded.shape, loaded.count, loaded.rank, loaded.rtol) == (stats.shape, stats.count, stats.rank, stats.rtol)
    x = correlated_images(8, seed=9)
    y = (x * 0.9).clamp(0, 1)
    assert torch.equal(reconstruction_risk(x, y, loaded), reconstruction_risk(x, y, stats))
    # not pickle: the file is plain safetensors
    assert path.read_bytes()[8:9] == b"{"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a saved ImageStatistics"):
        ImageStatistics.load(tmp_path / "other.safetensors")


@pytest.mark.parametrize(
    "source, fragment",
    [
        (torch.rand(1, 1, 4, 4), "at least 2 images"),
        ([], "at least 2 images"),
        ([torch.rand(3, 1, 4, 4), torch.rand(3, 1, 5, 4)], "share (C, H, W)"),
        (torch.rand(3, 4, 4), "4 dimensions"),
        (torch.rand(3, 1, 4, 4) * 2, "outside [0, 1]"),
        (torch.full((3, 1, 4, 4), float("nan")), "NaN"),
        (torch.ones(3, 1, 4, 4, dtype=torch.int32), "dtype"),
        ("images", "iterable"),
        ([torch.rand(3, 1, 4, 4), "oops"], "torch.Tensor"),
    ],
)
def test_fit_errors(source, fragment):
    with pytest.raises(ValueError) as info:
        ImageStatistics.fit(source)
    assert fragment in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu(train, stats):
    g = ImageStatistics.fit(train, device="cuda")
    assert g.device.type == "cuda"
    np.testing.assert_allclose(g.eigenvalues.cpu().numpy(), stats.eigenvalues.numpy(), rtol=1e-8, atol=1e-15)
    x = correlated_images(10, seed=4)
    y = (x + 0.01).clamp(0, 1)
    r_gpu = reconstruction_risk(x.cuda(), y.cuda(), g)
    assert r_gpu.device.type == "cuda"
    np.testing.assert_allclose(r_gpu.cpu().numpy(), reconstruction_risk(x, y, stats).numpy(), rtol=1e-6)
