"""Classifiers from elsewhere as F: torchvision's and timm's image classifiers, and the user's own.

``model.classifier`` names one as ``torchvision:<name>`` (e.g. ``torchvision:resnet18``, any of
``torchvision.models.list_models(module=torchvision.models)``) or ``timm:<name>`` (where timm
is installed). The network is built untrained (``weights=None``: nothing is downloaded) with
K outputs, behind the same input standardisation as the WideResNet (``mean``, ``std``
buffers). torchvision's networks take 3 channels: a grey image is repeated into three;
timm builds its stem for C channels itself. ``module:callable`` is a network of the user's
own (``vicious.models.own``: imported only where the user allowed it). The vicious regime
needs nothing more of F than its K logits, so any of them can be trained as vicious.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vicious.models.own import build_own, is_own

LIBRARIES = ("torchvision", "timm")


def split_name(name: str) -> tuple[str, str]:
    """``"torchvision:resnet18"`` -> ``("torchvision", "resnet18")``; a clear error otherwise."""
    if is_own(name):
        return "own", name
    library, _, model = name.partition(":")
    if library not in LIBRARIES or not model:
        raise ValueError(f"model.classifier must be wrn, torchvision:<name>, timm:<name> or module:callable, "
                         f"got {name!r}")
    return library, model


def _backbone(library: str, model: str, in_channels: int, num_outputs: int) -> nn.Module:
    if library == "own":
        return build_own(model, in_channels=in_channels, num_outputs=num_outputs)
    if library == "torchvision":
        import torchvision.models as models

        known = models.list_models(module=models)  # classification models only
        if model not in known:
            close = [n for n in known if n.startswith(model[:4])][:6] or known[:6]
            raise ValueError(f"torchvision has no classifier {model!r} (e.g. {', '.join(close)})")
        return models.get_model(model, weights=None, num_classes=num_outputs)
    try:
        import timm
    except ImportError:
        raise ValueError(f"model.classifier=timm:{model} needs the timm package: pip install timm") from None
    if model not in timm.list_models():
        raise ValueError(f"timm has no model {model!r} (timm.list_models() lists them)")
    return timm.create_model(model, pretrained=False, num_classes=num_outputs, in_chans=in_channels)


class LibraryClassifier(nn.Module):
    """F: images (N, C, S, S) in [0, 1] -> logits (N, K), a torchvision, timm or own network.

    Args:
        name: ``torchvision:<name>``, ``timm:<name>`` or ``module:callable``.
        in_channels: C, 1 or 3.
        num_outputs: K, classes or attributes.
        mean, std: per-channel statistics of the training images, applied inside.
    """

    def __init__(self, name: str, in_channels: int = 3, num_outputs: int = 10,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.25,)) -> None:
        super().__init__()
        library, model = split_name(name)
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.repeat_to = 3 if library == "torchvision" and in_channels != 3 else None
        if self.repeat_to and in_channels != 1:
            raise ValueError(f"torchvision classifiers take 1 or 3 channels, not {in_channels}")
        self.backbone = _backbone(library, model, in_channels, num_outputs)
        self.name, self.num_outputs = name, num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.repeat_to:
            x = x.expand(-1, self.repeat_to, -1, -1)
        return self.backbone(x)
