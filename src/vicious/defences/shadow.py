"""Decoders trained by someone other than the server that built the classifier.

* :class:`ShadowDecoder` (a small MLP) and :class:`ConvShadowDecoder` (dense layers, then
  transposed convolutions, like a server's decoder): what a *user* trains on their own
  images to see what a classifier's outputs give away (the excess-leakage detector);
  :func:`shadow_decoder` builds either by name;
* :func:`fit_decoder`: the training loop, with optional early stopping on held-out
  images, shared with the *adaptive server* that retrains its decoder on released
  (post-policy) outputs.
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


class ConvShadowDecoder(nn.Module):
    """features (N, F) -> images (N, C, S, S) in [0, 1]: two dense layers to a (4w, S/8, S/8) map,
    three stride-2 transposed convolutions (4w, 2w, w channels) with batch norm, a 3x3 convolution
    to C channels and a sigmoid; resized to S where S is not a multiple of 8."""

    def __init__(self, num_features: int, image_shape: tuple[int, int, int], width: int = 8) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, size = image_shape[0], image_shape[-1]
        self.seed_size = max(1, math.ceil(size / 8))
        self.seed_channels = 4 * width
        self.head = nn.Sequential(nn.Linear(num_features, 256), nn.ReLU(),
                                  nn.Linear(256, self.seed_channels * self.seed_size**2), nn.ReLU())

        def up(a: int, b: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]

        self.body = nn.Sequential(*up(4 * width, 4 * width), *up(4 * width, 2 * width), *up(2 * width, width),
                                  nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.head(features).view(len(features), self.seed_channels, self.seed_size, self.seed_size)
        x = self.body(x)
        if tuple(x.shape[-2:]) != tuple(self.image_shape[-2:]):
            x = nnf.interpolate(x, size=self.image_shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


SHADOW_DECODERS = ("mlp", "conv")


def shadow_decoder(kind: str, num_features: int, image_shape: tuple[int, int, int], hidden: int = 512) -> nn.Module:
    """``"mlp"``: :class:`ShadowDecoder` with ``hidden`` units; ``"conv"``: :class:`ConvShadowDecoder`."""
    if kind == "mlp":
        return ShadowDecoder(num_features, image_shape, hidden)
    if kind == "conv":
        return ConvShadowDecoder(num_features, image_shape)
    raise ValueError(f"unknown shadow decoder {kind!r}; choose one of {', '.join(SHADOW_DECODERS)}")


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
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    patience: int = 5,
) -> nn.Module:
    """Train ``decoder`` to map ``features`` (N, F) to ``images`` (N, C, S, S) with Adam.

    ``transform(features_batch, generator)``, when given, is applied to each batch
    before the decoder (e.g. a noisy release policy, drawn afresh every epoch).
    ``validation``: (features, images) held out from training; after every epoch their
    mean squared error is measured, training stops once it has not improved for
    ``patience`` epochs, and the decoder of the best epoch is returned (early stopping:
    each decoder trains as long as it gains, so a weak one is not cut short and a
    strong one does not overfit). Returns the decoder in eval mode. Deterministic for a
    given ``seed``.
    """
    if len(features) != len(images):
        raise ValueError(f"{len(features)} feature rows but {len(images)} images")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    draws = generator(seed)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr)
    best, best_state, stale = float("inf"), None, 0
    for _ in range(epochs):
        decoder.train()
        order = torch.randperm(len(features), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = features[index] if transform is None else transform(features[index], draws)
            value = loss(decoder(batch), images[index])
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        if validation is not None:
            error = float(mse(validation[1], decode(decoder, validation[0])).mean())
            if error < best:
                best, stale = error, 0
                best_state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    if best_state is not None:
        decoder.load_state_dict(best_state)
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
