"""Model registry: ``create_model(name, **kwargs)`` returns a plain ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vicious.models.covert import CovertDecoder, CovertMixing
from vicious.models.decoder import WideResNetDecoder, outputs_to_probabilities
from vicious.models.library import LibraryClassifier
from vicious.models.own import OwnDecoder
from vicious.models.reference import MLP, PlainCNN, SmallResNet
from vicious.models.wideresnet import WideResNetClassifier

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "wrn-classifier": WideResNetClassifier,
    "wrn-decoder": WideResNetDecoder,
    "library-classifier": LibraryClassifier,  # torchvision:<name>, timm:<name> or module:callable
    "own-decoder": OwnDecoder,  # module:callable
    # The audit's honest reference zoo (vicious.defences.zoo).
    "reference-cnn": PlainCNN,
    "reference-resnet": SmallResNet,
    "reference-mlp": MLP,
}


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, /, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``create_model("wrn-classifier", depth=16, width=2)``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(model_names())}") from None
    return factory(**kwargs)


def create_classifier(architecture: str, *, depth: int, width: int, in_channels: int, num_outputs: int,
                      mean=(0.5,), std=(0.25,)) -> nn.Module:
    """F of ``model.classifier``: ``wrn`` (a WideResNet of ``depth`` and ``width``), or a
    ``torchvision:<name>`` / ``timm:<name>`` / ``module:callable`` network (depth and width unused)."""
    common = {"in_channels": in_channels, "num_outputs": num_outputs, "mean": mean, "std": std}
    if architecture == "wrn":
        return create_model("wrn-classifier", depth=depth, width=width, **common)
    return create_model("library-classifier", name=architecture, **common)


def create_decoder(architecture: str, *, depth: int, width: int, num_inputs: int, out_channels: int,
                   image_size: int, input_form: str = "raw", task: str = "multiclass",
                   input_norm: bool = False, covert_key: int | None = None) -> nn.Module:
    """G of ``model.decoder``: ``wrn`` (the WideResNet decoder mirroring F's depth and width), or a
    ``module:callable`` of the user's own (depth, width and input_norm unused). With ``covert_key``,
    G reads the outputs through that key's :class:`CovertMixing` (``vicious.models.covert``)."""
    mixing = None
    if covert_key is not None:
        mixing = CovertMixing(num_inputs, covert_key, probabilities=input_form == "softmax", task=task)
        num_inputs = mixing.num_outputs
    common = {"num_inputs": num_inputs, "out_channels": out_channels, "image_size": image_size,
              "input_form": input_form, "task": task}
    if architecture == "wrn":
        decoder = create_model("wrn-decoder", depth=depth, width=width, input_norm=input_norm, **common)
    else:
        decoder = create_model("own-decoder", spec=architecture, **common)
    return decoder if mixing is None else CovertDecoder(decoder, mixing, input_form, task)


__all__ = [
    "CovertDecoder",
    "CovertMixing",
    "LibraryClassifier",
    "OwnDecoder",
    "WideResNetClassifier",
    "WideResNetDecoder",
    "create_classifier",
    "create_decoder",
    "create_model",
    "model_names",
    "outputs_to_probabilities",
]
