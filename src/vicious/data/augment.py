"""Training-time augmentation (docs/method.md, "Augmentation"), computed for a whole batch at once.

Each training batch is the originals plus one augmented copy of each. Every copy
gets ONE transform drawn uniformly from ``TRANSFORMS`` (the original experiments'
list, in their order, all with p = 1), then the copy is clamped to [0, 1]:

==================  ==========================================================
``hflip``           ``RandomHorizontalFlip(p=1)``
``erasing``         ``RandomErasing(p=1, scale=(0.02, 0.2), ratio=(0.2, 2.2), value=0)``
``perspective``     ``RandomPerspective(distortion_scale=0.5, p=1)`` (bilinear, fill 0)
``sharpness``       ``RandomAdjustSharpness(sharpness_factor=5, p=1)``
``autocontrast``    ``RandomAutocontrast(p=1)`` (per image and channel)
``center_crop``     ``CenterCrop(2 * side // 3)`` then ``Resize(side)`` (bilinear, antialias)
``gaussian_blur``   ``GaussianBlur(kernel_size=(5, 9), sigma=(0.1, 2))``
==================  ==========================================================

Each transform reproduces torchvision's tensor code path (``torchvision.transforms``,
v1) for one image, vectorised over the batch; the random parameters follow the same
distributions as torchvision's ``get_params`` (exactly, not approximately; see
``draw_params``). Two settings read differently from the way they are often quoted:

* the crop side is ``side * 2 // 3`` (floor), as in the original code
  (``CenterCrop(size=args.image_size*2//3)``): 21 for 32, 18 for 28, 42 for 64.
* ``GaussianBlur(kernel_size=(5, 9))`` is NOT a range of kernel sizes: torchvision
  reads it as one fixed kernel 5 wide (x) and 9 tall (y). Only sigma is random,
  uniform in (0.1, 2), shared by both axes.

Random numbers: every random quantity of a batch comes from ONE ``torch.rand`` call
(``N x 32`` uniforms) on the generator's device. The generator may live on the
images' device (no transfer at all) or on the CPU (the uniforms are drawn there and
copied over once; the same seed then gives the same augmentation on CPU and CUDA,
up to float rounding). A CUDA generator with CPU images is refused. With
``generator=None`` the default generator of the images' device is used.

No host-device synchronisation happens in ``augment_batch`` with the ``"dense"``
strategy (the default on accelerators): all seven transforms are computed for the
whole batch and each image picks its own with ``torch.where``. On the CPU the
``"grouped"`` strategy (each transform only on the images that drew it) is the
default because it is faster there (see benchmarks/bench_augmentation.py); both
give the same result for the same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

TRANSFORMS: tuple[str, ...] = (
    "hflip",
    "erasing",
    "perspective",
    "sharpness",
    "autocontrast",
    "center_crop",
    "gaussian_blur",
)

# Settings of the original experiments (docs/method.md, "Augmentation").
ERASE_SCALE = (0.02, 0.2)
ERASE_RATIO = (0.2, 2.2)
ERASE_ATTEMPTS = 10  # torchvision's RandomErasing.get_params retries this often
DISTORTION_SCALE = 0.5
SHARPNESS_FACTOR = 5.0
BLUR_KERNEL = (5, 9)  # (x, y) = (width, height), torchvision's order
BLUR_SIGMA = (0.1, 2.0)

# Layout of the per-image uniforms drawn by draw_params (one column each).
_U_CHOICE = 0
_U_ERASE_SCALE = slice(1, 1 + ERASE_ATTEMPTS)
_U_ERASE_RATIO = slice(1 + ERASE_ATTEMPTS, 1 + 2 * ERASE_ATTEMPTS)
_U_ERASE_TOP = 1 + 2 * ERASE_ATTEMPTS
_U_ERASE_LEFT = _U_ERASE_TOP + 1
_U_CORNERS = slice(_U_ERASE_LEFT + 1, _U_ERASE_LEFT + 9)
_U_SIGMA = _U_ERASE_LEFT + 9
_N_UNIFORMS = _U_SIGMA + 1


@dataclass
class AugmentParams:
    """Per-image random parameters of one augmented batch (all on the images' device).

    choice:    (N,) int64 in [0, 7): index into ``TRANSFORMS``.
    erase_box: (N, 4) int64 (top, left, height, width) of the zeroed rectangle;
               height = width = 0 when all 10 attempts failed (torchvision then
               leaves the image unchanged).
    corners:   (N, 4, 2) float, (x, y) pixel positions where the image corners
               top-left, top-right, bottom-right, bottom-left land (torchvision's
               ``endpoints``); whole numbers.
    sigma:     (N,) float in [0.1, 2): Gaussian blur sigma.
    """

    choice: torch.Tensor
    erase_box: torch.Tensor
    corners: torch.Tensor
    sigma: torch.Tensor

    def index(self, idx: torch.Tensor) -> AugmentParams:
        """The parameters of the images ``idx`` (1-D int64 tensor)."""
        return AugmentParams(self.choice[idx], self.erase_box[idx], self.corners[idx], self.sigma[idx])


def _randint(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Uniform integers in [low, high) from uniforms u in [0, 1), like torch.randint.

    The clamp guards against u * n rounding up to n in float32."""
    return (low + torch.floor(u * (high - low))).clamp(max=high - 1)


def draw_params(
    n: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugmentParams:
    """Draw the random parameters for ``n`` images of ``height x width``.

    Distributions are those of torchvision's ``get_params`` (p = 1 everywhere):

    * choice: uniform over the 7 transforms.
    * erasing: up to 10 attempts of area ~ U(0.02, 0.2) * H * W and aspect ratio
      ~ exp(U(log 0.2, log 2.2)), h = round(sqrt(area * ratio)), w = round(sqrt(area
      / ratio)); the first attempt with h < H and w < W wins, its top-left corner is
      uniform over the positions where the box fits; no attempt fitting means no
      erasing. All 10 attempts are drawn for every image and the first valid one is
      picked with argmax, which gives exactly torchvision's distribution without a
      data-dependent loop.
    * perspective: each corner moves inwards by an integer uniform in
      [0, int(0.5 * (side // 2))] along each axis.
    * blur sigma: uniform in [0.1, 2).

    The uniforms are drawn on the generator's device (``device`` when no generator is
    given; default CPU) and moved to ``device`` in one copy.
    """
    device = torch.device(device) if device is not None else None
    draw_device = generator.device if generator is not None else (device or torch.device("cpu"))
    device = device or draw_device
    u = torch.rand((n, _N_UNIFORMS), generator=generator, device=draw_device)
    u = u.to(device, non_blocking=True)

    choice = _randint(u[:, _U_CHOICE], 0, len(TRANSFORMS)).long()

    # Random erasing: all attempts at once, then the first that fits.
    area = height * width
    scale = ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * u[:, _U_ERASE_SCALE]
    log_lo, log_hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _U_ERASE_RATIO])
    # torch.round and Python's round both round half to even.
    h = torch.round(torch.sqrt(area * scale * ratio))
    w = torch.round(torch.sqrt(area * scale / ratio))
    fits = (h < height) & (w < width)
    first = torch.argmax(fits.to(u.dtype), dim=1, keepdim=True)  # first True, or 0 if none
    any_fits = fits.any(dim=1)
    h = torch.where(any_fits, h.gather(1, first).squeeze(1), 0.0)
    w = torch.where(any_fits, w.gather(1, first).squeeze(1), 0.0)
    top = torch.floor(u[:, _U_ERASE_TOP] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(u[:, _U_ERASE_LEFT] * (width - w + 1)).clamp(max=width - w)
    erase_box = torch.stack([top, left, h, w], dim=1).long()

    # Random perspective: torchvision's RandomPerspective.get_params.
    bound_w = int(DISTORTION_SCALE * (width // 2)) + 1
    bound_h = int(DISTORTION_SCALE * (height // 2)) + 1
    uc = u[:, _U_CORNERS]  # columns 0-3: x of each corner, 4-7: y of each corner
    # Each corner uses either the near or the far draw of its column, never both.
    near_x, far_x = _randint(uc[:, 0:4], 0, bound_w), _randint(uc[:, 0:4], width - bound_w, width)
    near_y, far_y = _randint(uc[:, 4:8], 0, bound_h), _randint(uc[:, 4:8], height - bound_h, height)
    xs = torch.stack([near_x[:, 0], far_x[:, 1], far_x[:, 2], near_x[:, 3]], dim=1)
    ys = torch.stack([near_y[:, 0], near_y[:, 1], far_y[:, 2], far_y[:, 3]], dim=1)
    corners = torch.stack([xs, ys], dim=2)

    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[:, _U_SIGMA]
    return AugmentParams(choice=choice, erase_box=erase_box, corners=corners, sigma=sigma)


# ---------------------------------------------------------------------------
# The transforms, batched. images: (N, C, H, W) float in [0, 1]; same shape out.
# ---------------------------------------------------------------------------


def hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror left-right."""
    return images.flip(-1)


def erase(images: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zero the rectangle ``box`` (N, 4) = (top, left, height, width) of each image."""
    _, _, height, width = images.shape
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    top, left, h, w = (box[:, k].view(-1, 1) for k in range(4))
    in_rows = (rows >= top) & (rows < top + h)  # (N, H)
    in_cols = (cols >= left) & (cols < left + w)  # (N, W)
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return images.masked_fill(inside, 0.0)


def perspective_coefficients(corners: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 8) coefficients (a..h) mapping output pixel (x, y) to input position
    ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1)), such that
    ``corners`` (N, 4, 2) land on the image corners; torchvision's
    ``_get_perspective_coeffs``, solved as a batch of 8 x 8 systems in float64."""
    end = corners.to(torch.float64)
    x, y = end[..., 0], end[..., 1]  # (N, 4)
    # The image corners (0, 0), (W-1, 0), (W-1, H-1), (0, H-1), made on the device by
    # arithmetic: torch.tensor(..., device=cuda) would be a synchronising copy.
    k = torch.arange(4, device=corners.device).expand_as(x)
    sx = ((k == 1) | (k == 2)).to(torch.float64) * (width - 1)
    sy = (k >= 2).to(torch.float64) * (height - 1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    row_x = torch.stack([x, y, one, zero, zero, zero, -sx * x, -sx * y], dim=-1)  # (N, 4, 8)
    row_y = torch.stack([zero, zero, zero, x, y, one, -sy * x, -sy * y], dim=-1)
    a = torch.stack([row_x, row_y], dim=2).reshape(-1, 8, 8)  # rows interleaved as torchvision
    b = torch.stack([sx, sy], dim=-1).reshape(-1, 8, 1)  # (x0, y0, x1, y1, ...)
    # solve_ex without error checks: torch.linalg.solve would synchronise with the
    # device to raise on singular systems; these four-corner systems never are.
    solution, _ = torch.linalg.solve_ex(a, b, check_errors=False)
    return solution.squeeze(-1)


def perspective(images: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Warp each image so its corners move to ``corners`` (N, 4, 2), (x, y) order
    top-left, top-right, bottom-right, bottom-left: torchvision's ``F.perspective``
    with bilinear interpolation and fill 0."""
    n, _, height, width = images.shape
    coeffs = perspective_coefficients(corners, height, width).to(images.dtype)  # (N, 8)
    # Pixel centres, as torchvision's _perspective_grid.
    xs = torch.linspace(0.5, width - 0.5, width, device=images.device, dtype=images.dtype)
    ys = torch.linspace(0.5, height - 0.5, height, device=images.device, dtype=images.dtype)
    x, y = xs.view(1, 1, width), ys.view(1, height, 1)
    c = [coeffs[:, k].view(n, 1, 1) for k in range(8)]
    denominator = c[6] * x + c[7] * y + 1.0
    grid_x = (c[0] * x + c[1] * y + c[2]) / (0.5 * width) / denominator - 1.0
    grid_y = (c[3] * x + c[4] * y + c[5]) / (0.5 * height) / denominator - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1)  # (N, H, W, 2)
    # torchvision samples an extra all-ones channel to blend in the fill value; with
    # fill 0 and bilinear sampling that multiplies the result by the sampled mask,
    # which darkens the border pixels a second time. Kept, to match it.
    ones = torch.ones_like(images[:, :1])
    warped = nnf.grid_sample(
        torch.cat([images, ones], dim=1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return warped[:, :-1] * warped[:, -1:]


def adjust_sharpness(images: torch.Tensor, factor: float = SHARPNESS_FACTOR) -> torch.Tensor:
    """torchvision's ``adjust_sharpness``: blend with a 3 x 3 smoothed copy (centre
    weight 5/13, border pixels kept), factor > 1 sharpens; clamped to [0, 1]."""
    channels = images.shape[1]
    if images.shape[-1] <= 2 or images.shape[-2] <= 2:
        return images  # torchvision leaves tiny images alone
    kernel = torch.ones((3, 3), dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(channels, 1, 3, 3)
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = nnf.conv2d(images, kernel, groups=channels)
    return (factor * images + (1.0 - factor) * smooth).clamp(0.0, 1.0)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """torchvision's ``autocontrast``: stretch each image's each channel to [0, 1];
    constant channels are left unchanged."""
    minimum = images.amin(dim=(-2, -1), keepdim=True)
    maximum = images.amax(dim=(-2, -1), keepdim=True)
    scale = 1.0 / (maximum - minimum)
    # torchvision assigns through a boolean mask; torch.where avoids the device sync.
    constant = ~torch.isfinite(scale)
    minimum = torch.where(constant, 0.0, minimum)
    scale = torch.where(constant, 1.0, scale)
    return ((images - minimum) * scale).clamp(0.0, 1.0)


def center_crop_resize(images: torch.Tensor) -> torch.Tensor:
    """Centre crop to ``2 * side // 3`` per axis (the original's integer division),
    then bilinear (antialiased, as torchvision's Resize) resize back to H x W."""
    _, _, height, width = images.shape
    crop_h, crop_w = 2 * height // 3, 2 * width // 3
    # Offsets as torchvision's center_crop (Python's round: half to even).
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    crop = images[..., top : top + crop_h, left : left + crop_w]
    return nnf.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _gaussian_kernel1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """(N, size) normalised Gaussian weights, one row per sigma (N,)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, size, dtype=sigma.dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (x / sigma[:, None]).pow(2))
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor, kernel_size: tuple[int, int] = BLUR_KERNEL
) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` with one sigma per image (N,), the same for x and
    y; ``kernel_size`` is (width, height); reflect padding."""
    n, channels, height, width = images.shape
    kx, ky = kernel_size
    weights_x = _gaussian_kernel1d(kx, sigma.to(images.dtype))  # (N, kx)
    weights_y = _gaussian_kernel1d(ky, sigma.to(images.dtype))  # (N, ky)
    kernels = weights_y[:, :, None] * weights_x[:, None, :]  # (N, ky, kx), as torchvision
    padded = nnf.pad(images, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
    # One depthwise convolution over all N * C planes, each with its image's kernel.
    planes = padded.reshape(1, n * channels, height + 2 * (ky // 2), width + 2 * (kx // 2))
    kernels = kernels.repeat_interleave(channels, dim=0)[:, None]  # (N * C, 1, ky, kx)
    return nnf.conv2d(planes, kernels, groups=n * channels).view(n, channels, height, width)


# One entry per TRANSFORMS name: (images, params) -> transformed images.
_APPLY: tuple[Callable[[torch.Tensor, AugmentParams], torch.Tensor], ...] = (
    lambda x, p: hflip(x),
    lambda x, p: erase(x, p.erase_box),
    lambda x, p: perspective(x, p.corners),
    lambda x, p: adjust_sharpness(x),
    lambda x, p: autocontrast(x),
    lambda x, p: center_crop_resize(x),
    lambda x, p: gaussian_blur(x, p.sigma),
)


def apply_params(images: torch.Tensor, params: AugmentParams, *, strategy: str = "auto") -> torch.Tensor:
    """Apply each image's drawn transform; clamp to [0, 1].

    strategy:
      ``"dense"``: every transform on the whole batch, each image picks its own
      with ``torch.where``; 7x the arithmetic, but no host-device synchronisation.
      ``"grouped"``: each transform only on the images that drew it (index
      tensors); less arithmetic, but ``nonzero`` synchronises on accelerators.
      ``"auto"``: grouped on the CPU, dense elsewhere.
    """
    if strategy == "auto":
        strategy = "grouped" if images.device.type == "cpu" else "dense"
    if strategy == "dense":
        out = images
        for k, apply in enumerate(_APPLY):
            out = torch.where((params.choice == k).view(-1, 1, 1, 1), apply(images, params), out)
    elif strategy == "grouped":
        out = torch.empty_like(images)
        for k, apply in enumerate(_APPLY):
            idx = torch.nonzero(params.choice == k).squeeze(1)
            if idx.numel():
                out[idx] = apply(images[idx], params.index(idx))
    else:
        raise ValueError(f"unknown strategy {strategy!r}; use 'auto', 'dense' or 'grouped'")
    return out.clamp(0.0, 1.0)


def augment_batch(
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    return_choices: bool = False,
    strategy: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One augmented copy of each image, computed for the whole batch on its device.

    images: (N, C, H, W) floating point in [0, 1], any device; H, W > 4 (the 9-tall
    blur kernel uses reflect padding).
    generator: on the images' device or on the CPU (see the module docstring); the
    same generator state gives the same output.
    Returns the copies, (N, C, H, W), same dtype and device, in [0, 1]; with
    ``return_choices`` also the (N,) int64 index into ``TRANSFORMS`` of each copy.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
    if generator is not None and generator.device.type != "cpu" and generator.device != images.device:
        raise ValueError(f"generator on {generator.device} cannot drive images on {images.device}")
    n, _, height, width = images.shape
    params = draw_params(n, height, width, generator=generator, device=images.device)
    out = apply_params(images, params, strategy=strategy)
    return (out, params.choice) if return_choices else out


def with_augmented_copies(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of docs/method.md, "Augmentation":
    (cat(originals, copies), cat(labels, labels)).

    images (N, C, H, W) in [0, 1]; labels (N,) or (N, K). Returns (2N, C, H, W) and
    (2N,) or (2N, K); the copies keep their originals' labels."""
    copies = augment_batch(images, generator=generator)
    return torch.cat([images, copies]), torch.cat([labels, labels])
