"""MSE and PSNR against hand computations."""

import math

import pytest
import torch

from vicious.metrics import MAX_PSNR_DB, PSNR, mse, psnr, psnr_from_mean_mse, psnr_from_mse


def test_mse_and_psnr_by_hand():
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    y = x.clone()
    y[0] = 0.1  # MSE 0.01 -> 20 dB
    y[1, 0] = 0.5  # half the pixels off by 0.5: MSE 0.125 -> 10 log10 8
    y[2, :, :2, :] = 0.01  # half the pixels off by 0.01: MSE 5e-5
    assert mse(x, y).tolist() == pytest.approx([0.01, 0.125, 5e-5], rel=1e-12)
    expected = [20.0, 10 * math.log10(8.0), 10 * math.log10(1 / 5e-5)]
    assert psnr(x, y).tolist() == pytest.approx(expected, rel=1e-12)
    assert PSNR()(x, y).tolist() == pytest.approx(expected, rel=1e-12)


def test_paper_psnr_is_psnr_of_mean_mse():
    x = torch.zeros(2, 1, 5, 5)
    y = x.clone()
    y[0] = 0.1  # MSE 1e-2, 20 dB
    y[1] = 0.01  # MSE 1e-4, 40 dB
    paper = psnr_from_mean_mse(x, y)
    assert paper.dim() == 0
    assert float(paper) == pytest.approx(10 * math.log10(1 / 0.00505), rel=1e-6)
    assert float(psnr(x, y).mean()) == pytest.approx(30.0, rel=1e-6)
    # streaming form: mean MSE accumulated by hand
    assert float(psnr_from_mse(0.00505)) == pytest.approx(float(paper), rel=1e-6)
    assert float(psnr_from_mse(mse(x, y).mean())) == pytest.approx(float(paper), rel=1e-6)


def test_identical_images_give_finite_100_db():
    x = torch.rand(4, 3, 8, 8)
    assert psnr(x, x).tolist() == [MAX_PSNR_DB] * 4
    assert float(psnr_from_mean_mse(x, x)) == MAX_PSNR_DB
    assert float(psnr_from_mse(0.0)) == MAX_PSNR_DB


def test_psnr_from_mse_elementwise_and_errors():
    m = torch.tensor([1.0, 0.1, 0.001])
    assert psnr_from_mse(m).tolist() == pytest.approx([0.0, 10.0, 30.0], abs=1e-5)
    for bad, frag in [(-0.1, "non-negative"), (float("nan"), "NaN"), ("0.1", "number"), (torch.tensor([1]), "dtype")]:
        with pytest.raises(ValueError, match=frag):
            psnr_from_mse(bad)


def test_mse_is_differentiable():
    x = torch.rand(2, 1, 4, 4)
    y = torch.rand(2, 1, 4, 4, requires_grad=True)
    mse(x, y).sum().backward()
    assert torch.allclose(y.grad, 2 * (y - x).detach() / 16)
