"""The shared validator: every bad input gives a ValueError with a precise message."""

import pytest
import torch

from vicious.metrics import RANGE_TOLERANCE, mse, psnr, ssim
from vicious.metrics._validate import prepare_pair, validate_images

GOOD = torch.rand(2, 1, 12, 12)


@pytest.mark.parametrize(
    "x, x_rec, fragment",
    [
        (GOOD[0], GOOD[0], "must have 4 dimensions (N, C, H, W), got 3"),
        (GOOD.flatten(1), GOOD.flatten(1), "must have 4 dimensions (N, C, H, W), got 2"),
        (GOOD, GOOD[:1], "must have the same shape"),
        (GOOD, GOOD.transpose(2, 3)[:, :, :11], "must have the same shape"),
        ((GOOD * 255).to(torch.uint8), (GOOD * 255).to(torch.uint8), "x.float() / 255"),
        (GOOD.to(torch.int64), GOOD.to(torch.int64), "expected a floating-point tensor"),
        (GOOD > 0.5, GOOD > 0.5, "expected a floating-point tensor"),
        (GOOD, torch.where(GOOD > 0.5, float("nan"), GOOD), "x_rec contains"),
        (GOOD, torch.where(GOOD > 0.5, float("inf"), GOOD), "infinite"),
        (GOOD * 255, GOOD * 255, "outside [0, 1]"),
        (GOOD - 0.5, GOOD, "outside [0, 1]"),
        (torch.empty(0, 1, 12, 12), torch.empty(0, 1, 12, 12), "is empty"),
        (GOOD.numpy(), GOOD, "must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_value_error_with_message(x, x_rec, fragment):
    for fn in (mse, psnr, ssim):
        with pytest.raises(ValueError) as info:
            fn(x, x_rec)
        assert fragment in str(info.value)
        assert "\n" not in str(info.value)


def test_images_smaller_than_ssim_window():
    x = torch.rand(2, 3, 10, 32)
    with pytest.raises(ValueError, match=r"10×32 pixels, smaller than the 11×11 SSIM window"):
        ssim(x, x)
    # other metrics have no window and accept them
    assert mse(x, x).shape == (2,)


def test_tolerance_is_accepted_and_clamped():
    x = torch.full((1, 1, 11, 11), 1.0 + RANGE_TOLERANCE / 2, dtype=torch.float64)
    y = torch.full((1, 1, 11, 11), -RANGE_TOLERANCE / 2, dtype=torch.float64)
    a, b = prepare_pair(x, y)
    assert float(a.max()) == 1.0 and float(b.min()) == 0.0
    assert torch.allclose(mse(x, y), torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        mse(x + 2 * RANGE_TOLERANCE, y)


def test_half_precision_is_computed_in_float32_and_float64_kept():
    x = torch.rand(3, 1, 12, 12)
    y = torch.rand(3, 1, 12, 12)
    assert mse(x.half(), y.half()).dtype == torch.float32
    assert ssim(x.bfloat16(), y.bfloat16()).dtype == torch.float32
    assert psnr(x.double(), y).dtype == torch.float64
    assert torch.allclose(mse(x.half(), y.half()), mse(x, y), atol=2e-3)


def test_validate_images_returns_input_unchanged():
    assert validate_images(GOOD) is GOOD


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_mismatch_message():
    with pytest.raises(ValueError, match="move both to one device"):
        mse(GOOD, GOOD.cuda())
