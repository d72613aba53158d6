"""Batched augmentation (vicious.data.augment) against torchvision's own transforms.

Deterministic transforms are compared image by image with torchvision; the random
ones both exactly (torchvision's functional ops fed the parameters we drew) and in
distribution (torchvision's own random transforms versus ours, summary statistics
over 600 images). All seeds are fixed, so nothing here can flake; the
distribution bounds are 4.5 standard errors of the difference of the two means.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as nnf
import torchvision.transforms.functional as TF
from torchvision import transforms as T

from vicious.data import augment as A
from vicious.data.augment import TRANSFORMS, augment_batch, draw_params, with_augmented_copies

_REF_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_augmentation.py"
_spec = importlib.util.spec_from_file_location("reference_augmentation", _REF_PATH)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

SIDE = 32
K = {name: k for k, name in enumerate(TRANSFORMS)}
START = [[0, 0], [SIDE - 1, 0], [SIDE - 1, SIDE - 1], [0, SIDE - 1]]  # torchvision's startpoints


def smooth_images(n: int, channels: int = 3, seed: int = 0, side: int = SIDE) -> torch.Tensor:
    """(n, channels, side, side) in [0.02, 1]: smooth like photos (so warps and blurs
    change them by amounts that depend on their parameters) and never exactly 0 (so
    erased pixels can be counted)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 6, 6, generator=g)
    return nnf.interpolate(low, size=(side, side), mode="bilinear", align_corners=False).clamp(0.02, 1.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_means_close(ours: torch.Tensor, ref: torch.Tensor, n_se: float = 4.5) -> None:
    se = (ours.var() / ours.numel() + ref.var() / ref.numel()).sqrt()
    diff = (ours.mean() - ref.mean()).abs()
    assert diff <= n_se * se, f"means {ours.mean():.5f} vs {ref.mean():.5f}, {diff / se:.1f} standard errors apart"


# --- the batch as a whole ----------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range_device(channels, dtype):
    x = torch.rand(40, channels, SIDE, SIDE, dtype=dtype)
    out = augment_batch(x, generator=gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not out.equal(x)


def test_non_square_images():
    x = torch.rand(30, 3, 24, 40)
    out = augment_batch(x, generator=gen(2))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_deterministic_given_seed():
    x = torch.rand(50, 3, SIDE, SIDE)
    a, choices_a = augment_batch(x, generator=gen(7), return_choices=True)
    b, choices_b = augment_batch(x, generator=gen(7), return_choices=True)
    c = augment_batch(x, generator=gen(8))
    assert a.equal(b) and choices_a.equal(choices_b)
    assert not a.equal(c)


def test_dense_and_grouped_strategies_agree():
    x = torch.rand(60, 3, SIDE, SIDE)
    dense = augment_batch(x, generator=gen(3), strategy="dense")
    grouped = augment_batch(x, generator=gen(3), strategy="grouped")
    torch.testing.assert_close(dense, grouped, atol=1e-6, rtol=0)


def test_unknown_strategy_and_bad_input_refused():
    with pytest.raises(ValueError):
        augment_batch(torch.rand(2, 3, SIDE, SIDE), strategy="fast")
    with pytest.raises(ValueError):
        augment_batch(torch.randint(0, 255, (2, 3, SIDE, SIDE), dtype=torch.uint8))


def test_choice_frequencies_uniform():
    n = 70_000
    choices = draw_params(n, SIDE, SIDE, generator=gen(11)).choice
    counts = torch.bincount(choices, minlength=len(TRANSFORMS)).double()
    assert counts.numel() == len(TRANSFORMS)
    expected = n / len(TRANSFORMS)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 6 degrees of freedom: P(chi2 > 40) ~ 5e-7 for a fair draw.
    assert chi2 < 40, counts
    # augment_batch reports the same choices draw_params makes from the same state.
    _, reported = augment_batch(torch.rand(300, 1, SIDE, SIDE), generator=gen(11), return_choices=True)
    assert reported.equal(draw_params(300, SIDE, SIDE, generator=gen(11)).choice)


def test_with_augmented_copies():
    x = torch.rand(10, 3, SIDE, SIDE)
    labels = torch.arange(10)
    images, doubled = with_augmented_copies(x, labels, gen(4))
    assert images.shape == (20, 3, SIDE, SIDE)
    assert images[:10].equal(x) and images[10:].equal(augment_batch(x, generator=gen(4)))
    assert doubled.equal(torch.cat([labels, labels]))
    attributes = torch.rand(10, 40).round()
    _, doubled = with_augmented_copies(x, attributes, gen(4))
    assert doubled.shape == (20, 40)


# --- each transform against torchvision, image by image --------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_deterministic_transforms_match_torchvision(channels):
    """Flip, sharpness, autocontrast and centre-crop-resize, through augment_batch,
    equal torchvision's transforms on each single image."""
    x = torch.rand(120, channels, SIDE, SIDE)
    x[0, 0] = 0.4  # a constant channel: autocontrast must leave it alone
    aug = reference.build_aug_set(SIDE)
    out, choices = augment_batch(x, generator=gen(5), return_choices=True)
    for name in ("hflip", "sharpness", "autocontrast", "center_crop"):
        picked = torch.nonzero(choices == K[name]).squeeze(1)
        assert picked.numel() > 5, name
        expected = torch.stack([aug[K[name]](x[i]) for i in picked]).clamp(0, 1)
        # Same operations as torchvision; the tolerance only allows for batched kernels
        # summing in another order.
        torch.testing.assert_close(out[picked], expected, atol=1e-6, rtol=0, msg=name)
    # The constant channel is untouched by autocontrast, whatever image 0 drew.
    torch.testing.assert_close(A.autocontrast(x[:1]), TF.autocontrast(x[0])[None], atol=0, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_random_transforms_match_torchvision_given_params(channels):
    """Erasing, perspective and blur, through augment_batch, equal torchvision's
    functional ops fed each image's drawn parameters."""
    x = torch.rand(150, channels, SIDE, SIDE)
    out, choices = augment_batch(x, generator=gen(6), return_choices=True)
    params = draw_params(len(x), SIDE, SIDE, generator=gen(6))  # the same draws
    zero = torch.tensor(0.0)
    ops = {
        "erasing": lambda i: TF.erase(x[i], *params.erase_box[i].tolist(), zero),
        "perspective": lambda i: TF.perspective(
            x[i], START, params.corners[i].long().tolist(), fill=[0.0] * channels
        ),
        "gaussian_blur": lambda i: TF.gaussian_blur(x[i], [5, 9], [params.sigma[i].item()] * 2),
    }
    # Perspective samples at coordinates from a matrix product whose summation order differs
    # between AVX2 and AVX-512 kernels: ~1e-5 px apart, times pixel-to-pixel jumps of up to 1
    # in random images. 5e-4 is still 1/8 of a uint8 level; the others agree to 1e-5 everywhere.
    tolerance = {"erasing": 1e-5, "perspective": 5e-4, "gaussian_blur": 1e-5}
    for name, op in ops.items():
        picked = torch.nonzero(choices == K[name]).squeeze(1)
        assert picked.numel() > 5, name
        expected = torch.stack([op(i) for i in picked]).clamp(0, 1)
        torch.testing.assert_close(out[picked], expected, atol=tolerance[name], rtol=0, msg=name)


# --- random parameters: same distributions as torchvision's get_params -------


def test_perspective_corner_distribution():
    n = 2000
    ours = draw_params(n, SIDE, SIDE, generator=gen(21)).corners  # (n, 4, 2)
    with torch.random.fork_rng():
        torch.manual_seed(22)
        ref = torch.tensor([T.RandomPerspective.get_params(SIDE, SIDE, 0.5)[1] for _ in range(n)]).double()
    for corner in range(4):
        for axis in range(2):
            a, b = ours[:, corner, axis].double(), ref[:, corner, axis]
            assert a.unique().tolist() == b.unique().tolist(), (corner, axis)  # same support
            assert_means_close(a, b)


@pytest.mark.parametrize("height, width", [(SIDE, SIDE), (4, 64)])
def test_erasing_box_distribution(height, width):
    """Box position and size as torchvision's get_params. On the 4 x 64 strip most
    attempts do not fit, so torchvision's retry loop (and its give-up) shape the
    distribution; ours must follow it there too."""
    n = 4000
    box = draw_params(n, height, width, generator=gen(23)).erase_box.double()
    probe = torch.zeros(1, height, width)
    erasing = reference.build_aug_set(SIDE)[K["erasing"]]  # the original's settings
    ref = []
    with torch.random.fork_rng():
        torch.manual_seed(24)
        for _ in range(n):
            i, j, h, w, _v = erasing.get_params(probe, scale=erasing.scale, ratio=erasing.ratio, value=[0.0])
            ref.append((i, j, h, w) if (h, w) != (height, width) else (0, 0, 0, 0))  # give-up: nothing erased
    ref = torch.tensor(ref).double()
    assert_means_close((box[:, 2] == 0).double(), (ref[:, 2] == 0).double())
    assert_means_close(box[:, 2] * box[:, 3], ref[:, 2] * ref[:, 3])  # erased area
    fitted_ours, fitted_ref = box[box[:, 2] > 0], ref[ref[:, 2] > 0]
    for column in range(4):
        assert_means_close(fitted_ours[:, column], fitted_ref[:, column])
    assert (box[:, 0] + box[:, 2] <= height).all() and (box[:, 1] + box[:, 3] <= width).all()


def test_blur_sigma_range():
    sigma = draw_params(5000, SIDE, SIDE, generator=gen(25)).sigma
    assert sigma.min() >= 0.1 and sigma.max() < 2.0
    assert abs(sigma.mean().item() - 1.05) < 0.03


# --- random transforms: outputs distributed as torchvision's -----------------


@pytest.mark.parametrize(
    "name, statistic",
    [
        ("erasing", lambda y, x: (y == 0).double().mean(dim=(1, 2, 3))),  # fraction erased
        ("perspective", lambda y, x: (y - x).abs().double().mean(dim=(1, 2, 3))),
        ("gaussian_blur", lambda y, x: (y - x).abs().double().mean(dim=(1, 2, 3))),
    ],
)
def test_random_transform_statistics_match_torchvision(name, statistic):
    n = 600
    x = smooth_images(n, seed=30)
    params = draw_params(n, SIDE, SIDE, generator=gen(31))
    ours = A._APPLY[K[name]](x, params)
    transform = reference.build_aug_set(SIDE)[K[name]]
    with torch.random.fork_rng():
        torch.manual_seed(32)
        ref = torch.stack([transform(image) for image in x])
    assert_means_close(statistic(ours, x), statistic(ref, x))


# --- accelerators --------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_matches_cpu_with_a_cpu_generator():
    x = torch.rand(64, 3, SIDE, SIDE)
    on_cpu, choices_cpu = augment_batch(x, generator=gen(40), return_choices=True)
    on_gpu, choices_gpu = augment_batch(x.cuda(), generator=gen(40), return_choices=True)
    assert on_gpu.device.type == "cuda"
    assert choices_gpu.cpu().equal(choices_cpu)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)


@cuda
def test_cuda_dense_path_does_not_synchronise():
    x = torch.rand(64, 3, SIDE, SIDE, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(41)
    augment_batch(x, generator=g)  # warm-up: library loading may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment_batch(x, generator=g, strategy="dense")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape
