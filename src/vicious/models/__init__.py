"""Model registry: ``create_model(name, **kwargs)`` returns a plain ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vicious.models.decoder import WideResNetDecoder, outputs_to_probabilities
from vicious.models.wideresnet import WideResNetClassifier

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "wrn-classifier": WideResNetClassifier,
    "wrn-decoder": WideResNetDecoder,
}


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``create_model("wrn-classifier", depth=16, width=2)``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(model_names())}") from None
    return factory(**kwargs)


__all__ = [
    "WideResNetClassifier",
    "WideResNetDecoder",
    "create_model",
    "model_names",
    "outputs_to_probabilities",
]
