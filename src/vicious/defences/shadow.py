"""Decoders trained by someone other than the server that built the classifier.

* :class:`ShadowDecoder`: a small MLP a *user* trains on their own images to see
  what a classifier's outputs give away (the excess-leakage detector); cheap on a CPU.
* :func:`fit_decoder`: the training loop, shared with the *adaptive server* that
  retrains its decoder on released (post-policy) outputs.
* :func:`reconstruction_measures`: R (principal) and PSNR of what such a decoder rebuilds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import nn

from vicious.metrics import ImageStatistics, mse, psnr_from_mse, reconstruction_risk
from vicious.seeding import generator


class ShadowDecoder(nn.Module):
    """features (N, F) -> images (N, C, S, S) in [0, 1]: two hidden ReLU layers, sigmoid output."""

    def __init__(self, num_features: int, image_shape: tuple[int, int, int], hidden: int = 512) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(image_shape)),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features)).view(len(features), *self.image_shape)


def mse_loss(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return nnf.mse_loss(reconstructions, images)


def fit_decoder(
    decoder: nn.Module,
    features: torch.Tensor,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> nn.Module:
    """Train ``decoder`` to map ``features`` (N, F) to ``images`` (N, C, S, S) with Adam.

    ``transform(features_batch, generator)``, when given, is applied to each batch
    before the decoder (e.g. a noisy release policy, drawn afresh every epoch).
    Returns the decoder in eval mode. Deterministic for a given ``seed``.
    """
    if len(features) != len(images):
        raise ValueError(f"{len(features)} feature rows but {len(images)} images")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    draws = generator(seed)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = features[index] if transform is None else transform(features[index], draws)
            value = loss(decoder(batch), images[index])
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
    return decoder.eval()


@torch.no_grad()
def decode(decoder: nn.Module, features: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``decoder`` applied in eval mode and in batches; returns images on the CPU."""
    decoder.eval()
    return torch.cat([decoder(features[s : s + batch_size]).float().cpu() for s in range(0, len(features), batch_size)])


def reconstruction_measures(images: torch.Tensor, reconstructions: torch.Tensor, statistics: ImageStatistics,
                            variance_fraction: float = 0.9) -> dict[str, float]:
    """Mean R (principal subspace holding ``variance_fraction``) and PSNR of the mean MSE."""
    risk = reconstruction_risk(images, reconstructions, statistics, variant="principal", variance_fraction=variance_fraction)
    return {"r_principal": float(risk.mean()), "psnr": float(psnr_from_mse(mse(images, reconstructions).mean()))}
