"""Small, label-preserving changes of images: Gaussian noise, a slight blur, one-pixel shifts.

One home for the changes the sensitivity detector measures outputs under
(``vicious.defences.sensitivity``) and an evading server trains against
(``vicious.attack.evasion``), so both perturb images the same way.
Images are float (N, C, H, W) in [0, 1]; every change keeps shape and range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2.functional import gaussian_blur

from vicious.seeding import generator

Perturbation = Callable[[torch.Tensor], torch.Tensor]

NOISE_SIGMA = 0.03
BLUR_SIGMA = 0.5
# (dx, dy) of the four one-pixel shifts: right, left, down, up.
SHIFTS = {"shift_right": (1, 0), "shift_left": (-1, 0), "shift_down": (0, 1), "shift_up": (0, -1)}


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Images moved by (dx, dy) pixels, edges replicated; shape kept."""
    pad = max(abs(dx), abs(dy))
    padded = nnf.pad(images, (pad, pad, pad, pad), mode="replicate")
    h, w = images.shape[-2:]
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A 3 x 3 Gaussian blur of standard deviation ``sigma`` pixels."""
    return gaussian_blur(images, kernel_size=[3, 3], sigma=[sigma, sigma])


def perturbations(noise_sigma: float = NOISE_SIGMA, blur_sigma: float = BLUR_SIGMA, seed: int = 0) -> dict[str, Perturbation]:
    """The label-preserving changes, each images (N, C, H, W) in [0, 1] -> same shape, in [0, 1];
    the noise is drawn on the CPU from ``seed`` (the same noise on every call)."""

    def noise(images: torch.Tensor) -> torch.Tensor:
        return (images + noise_sigma * torch.randn(images.shape, generator=generator(seed))).clamp(0, 1)

    return {
        "noise": noise,
        "blur": lambda images: blur(images, blur_sigma),
        **{name: (lambda images, d=d: shift(images, *d)) for name, d in SHIFTS.items()},
    }


def perturbed_copies(
    images: torch.Tensor, generator: torch.Generator, noise_sigma: float = NOISE_SIGMA, blur_sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """One perturbed copy of each image, its change drawn uniformly from those of
    :func:`perturbations` (so a batch's mean movement estimates the detector's mean over
    changes); the draws come from ``generator`` (CPU or the images' device), all at once.

    images (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1].
    """
    n = len(images)
    choice = torch.randint(0, 2 + len(SHIFTS), (n,), generator=generator, device=generator.device).to(images.device)
    noise = torch.randn(images.shape, generator=generator, device=generator.device).to(images.device, images.dtype)
    candidates = [(images + noise_sigma * noise).clamp(0, 1), blur(images, blur_sigma)]
    candidates += [shift(images, dx, dy) for dx, dy in SHIFTS.values()]
    # Every change on the whole batch, each image picks its own: no host-device synchronisation.
    out = images
    for k, candidate in enumerate(candidates):
        out = torch.where((choice == k).view(-1, 1, 1, 1), candidate, out)
    return out
