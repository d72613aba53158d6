"""Per-channel mean and standard deviation of a training split, cached as JSON.

The statistics are computed on first load and stored in the cache directory under
a name keyed by dataset, source, image size and seed (the seed decides which
images are in the training split). CelebA's attribute choice does not change the
images, so it is not part of the key.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cache import load_json, save_json, short_hash

# Sum this many images at a time: bounds the float64 buffer.
_CHUNK = 4096


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (population) standard deviation per channel of uint8 N×C×H×W images.

    Both are on the [0, 1] scale; accumulated in float64 so that 100k+ images do not
    lose precision.
    """
    if len(images) == 0:
        raise ValueError("cannot compute statistics of an empty training split")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(_CHUNK):
        values = chunk.to(torch.float64).div_(255.0)
        total += values.sum(dim=(0, 2, 3))
        total_sq += values.square().sum(dim=(0, 2, 3))
    count = images.numel() / channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def stats_path(cache: Path, name: str, source: str, image_size: int, seed: int) -> Path:
    """Where the statistics of one (dataset, source, image size, seed) live."""
    return cache / "stats" / f"{name}-s{image_size}-seed{seed}-{short_hash(source)}.json"


def cached_channel_stats(
    train_images: torch.Tensor, *, cache: Path, name: str, source: str, image_size: int, seed: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """channel_stats(train_images), read from the cache when it was computed before."""
    path = stats_path(cache, name, source, image_size, seed)
    key = {
        "dataset": name,
        "source": source,
        "image_size": image_size,
        "seed": seed,
        "num_train": len(train_images),
        "channels": int(train_images.shape[1]),
    }
    stored = load_json(path)
    if stored is not None and all(stored.get(field) == value for field, value in key.items()):
        return tuple(stored["mean"]), tuple(stored["std"])
    mean, std = channel_stats(train_images)
    save_json(path, {**key, "mean": list(mean), "std": list(std)})
    return mean, std


def positive_weights(labels: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """pos_weight_j = (N − P_j) / P_j for float 0/1 labels (N, K); float32 (K,).

    An attribute with no positive training example (P_j = 0) has no defined weight;
    rather than clamp it to an arbitrary number, this raises a ValueError naming it,
    since such an attribute cannot be learned from the training split anyway.
    """
    positives = labels.to(torch.float64).sum(dim=0)
    absent = [names[j] for j in range(len(names)) if positives[j] == 0]
    if absent:
        raise ValueError(
            f"pos_weight is undefined: attribute(s) {', '.join(absent)} have no positive "
            f"example among the {len(labels)} training samples; choose other attributes"
        )
    return ((len(labels) - positives) / positives).to(torch.float32)
