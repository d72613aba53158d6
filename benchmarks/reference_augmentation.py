"""The original, per-image augmentation, with torchvision's own transforms.

A reference for benchmarks and tests only (the library uses
``vicious.data.augment``). It mirrors the original experiments' code: a list of
torchvision transforms, one drawn uniformly per image and applied image by image in
a Python loop, then the copies stacked and clamped to [0, 1]. The original drew the
index with ``np.random.randint``; here ``transforms.RandomChoice`` (Python's
``random``) does the same uniform choice. The transforms' own parameters come from
torch's global generator, on the images' device as in the original.
"""

from __future__ import annotations

import torch
from torchvision import transforms as T


def build_aug_set(image_size: int) -> list[torch.nn.Module]:
    """The original list of transforms, in the order of ``vicious.data.augment.TRANSFORMS``,
    for square images of side ``image_size``."""
    return [
        T.RandomHorizontalFlip(p=1.0),
        T.RandomErasing(scale=(0.02, 0.2), ratio=(0.2, 2.2), value=0, p=1.0),
        T.RandomPerspective(distortion_scale=0.5, p=1.0),
        T.RandomAdjustSharpness(sharpness_factor=5, p=1.0),
        T.RandomAutocontrast(p=1.0),
        T.Compose([T.CenterCrop(size=image_size * 2 // 3), T.Resize(size=image_size)]),
        T.GaussianBlur(kernel_size=(5, 9), sigma=(0.1, 2)),
    ]


def reference_augment(images: torch.Tensor, chooser: T.RandomChoice | None = None) -> torch.Tensor:
    """One augmented copy per image, image by image: (N, C, H, W) in [0, 1] -> same.

    ``chooser``: a prebuilt ``RandomChoice`` over ``build_aug_set`` (built here when
    not given; building is cheap next to applying)."""
    if chooser is None:
        chooser = T.RandomChoice(build_aug_set(images.shape[-1]))
    return torch.stack([chooser(image) for image in images]).clamp(0.0, 1.0)
