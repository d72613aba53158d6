"""Checks of a network built from elsewhere (another library, the user's own code) before it
trains: one forward pass of a small batch, refused in one line if it cannot serve as F or G."""

from __future__ import annotations

import torch
from torch import nn


def _probe(network: nn.Module, inputs: torch.Tensor, cannot: str) -> torch.Tensor:
    """``network(inputs)`` in eval mode and without gradients, its mode restored; a failure is a
    ValueError ``cannot`` followed by the first line of the network's error."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            return network(inputs)
    except RuntimeError as err:
        raise ValueError(cannot.format(error=str(err).splitlines()[0][:160])) from None
    finally:
        network.train(was_training)


def check_input_size(classifier: nn.Module, in_channels: int, image_size: int) -> None:
    """Refuse, in one line, a network that cannot take ``image_size`` images (e.g. Inception
    needs 75 px) or does not give (N, K): one forward pass of two blank images."""
    name = getattr(classifier, "name", "the classifier")
    out = _probe(classifier, torch.zeros(2, in_channels, image_size, image_size),
                 f"{name} cannot take {image_size}×{image_size} images ({{error}}); choose another model or "
                 "data.image_size")
    if out.ndim != 2 or out.shape[0] != 2:
        raise ValueError(f"{name} gives outputs of shape {tuple(out.shape[1:])} per image, not K values")


def check_decoder_output(decoder: nn.Module, num_inputs: int, shape: tuple[int, int, int]) -> None:
    """Refuse, in one line, a G that does not turn (N, K) outputs into (N, C, S, S) images in [0, 1]."""
    name = getattr(decoder, "name", "the decoder")
    images = _probe(decoder, torch.randn(2, num_inputs), f"{name} cannot take (N, {num_inputs}) outputs ({{error}})")
    if tuple(images.shape) != (2, *shape):
        raise ValueError(f"{name} gives images of shape {tuple(images.shape[1:])}, not {shape}")
    if not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError(f"{name} gives pixels outside [0, 1]; end it with a sigmoid")
