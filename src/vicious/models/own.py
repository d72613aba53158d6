"""Networks of the user's own: ``model.classifier`` or ``model.decoder`` = ``package.module:callable``.

Importing a module runs its code, and a config (or a weights file's metadata) may come from
someone else. So a config alone never imports anything: the user names the modules they trust,
on the command line (``vicious train --allow-import mynets ...``) or in the environment
(``VICIOUS_ALLOW_IMPORT=mynets,lab.models``), which the worker processes of a sweep or of DDP
inherit. A listed package allows its submodules. The audit never imports them (its models run
confined): export such a classifier to ONNX or TorchScript and audit that file.

The callables' contracts (keyword arguments; return a plain ``nn.Module``):

* classifier: ``factory(in_channels=C, num_outputs=K)``; the module maps standardised images
  (N, C, S, S) (the wrapper subtracts the training images' mean and divides by their std) to
  K logits (N, K).
* decoder: ``factory(num_inputs=K, out_channels=C, image_size=S)``; the module maps F's outputs
  (N, K), logits or probabilities as ``output`` says (the wrapper applies the softmax), to images
  (N, C, S, S) in [0, 1] (end it with a sigmoid).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping

import torch
from torch import nn

from vicious.models.decoder import outputs_to_probabilities

ENV_VAR = "VICIOUS_ALLOW_IMPORT"
_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


def is_own(spec: str) -> bool:
    """Whether ``spec`` names code of the user's own (``module:callable``; its syntax is
    checked with the config, ``vicious.config.schema.OWN_SPEC``)."""
    module, colon, attribute = spec.partition(":")
    return bool(colon and attribute) and re.fullmatch(_MODULE, module) is not None and module not in ("torchvision", "timm")


def allowed_modules(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The modules the user allowed to be imported (``VICIOUS_ALLOW_IMPORT``, comma-separated)."""
    return tuple(m.strip() for m in environ.get(ENV_VAR, "").split(",") if m.strip())


def allow_import(modules: Iterable[str], environ: MutableMapping[str, str] = os.environ) -> None:
    """Add ``modules`` to the allowed ones, in the environment so child processes inherit them."""
    names = [*allowed_modules(environ), *(m.strip() for m in modules)]
    for name in names:
        if not re.fullmatch(_MODULE, name):
            raise ValueError(f"--allow-import takes a Python module name such as mynets or lab.models, got {name!r}")
    environ[ENV_VAR] = ",".join(dict.fromkeys(names))


def check_allowed(spec: str) -> None:
    """Refuse, in one line and without importing anything, a ``spec`` whose module the user
    did not allow (``--allow-import``); anything else passes."""
    if not is_own(spec):
        return
    module_name = spec.partition(":")[0]
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed_modules()):
        top = module_name.split(".")[0]
        raise ValueError(f"{spec} is code of your own, and importing {module_name} would run it, which a config "
                         f"cannot ask for by itself; if you trust it, pass --allow-import {top} "
                         f"(or set {ENV_VAR}={top})")


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable ``spec`` names, imported only if its module (or a parent package) is allowed."""
    check_allowed(spec)
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name} ({err}); run from the folder that holds it or add that "
                         "folder to PYTHONPATH") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attribute!r}")
    return factory


def build_own(spec: str, **kwargs) -> nn.Module:
    """``factory(**kwargs)`` of an allowed ``spec``, which must return an ``nn.Module``."""
    network = import_factory(spec)(**kwargs)
    if not isinstance(network, nn.Module):
        raise ValueError(f"{spec}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) returned a "
                         f"{type(network).__name__}, not a torch.nn.Module")
    return network


class OwnDecoder(nn.Module):
    """G of the user's own: outputs (N, K) -> images (N, C, S, S) in [0, 1].

    Args:
        spec: ``module:callable``, called as ``callable(num_inputs=K, out_channels=C, image_size=S)``.
        num_inputs, out_channels, image_size: K, C and S.
        input_form: ``"raw"`` (G sees logits) or ``"softmax"`` (probabilities, computed here).
        task: ``"multiclass"`` (softmax) or ``"multilabel"`` (sigmoid per attribute).
    """

    def __init__(self, spec: str, num_inputs: int, out_channels: int, image_size: int, input_form: str = "raw",
                 task: str = "multiclass") -> None:
        super().__init__()
        if input_form not in ("raw", "softmax"):
            raise ValueError(f"input_form must be 'raw' or 'softmax', got {input_form!r}")
        self.network = build_own(spec, num_inputs=num_inputs, out_channels=out_channels, image_size=image_size)
        self.name, self.input_form, self.task = spec, input_form, task

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.input_form == "softmax":
            outputs = outputs_to_probabilities(outputs, self.task)
        return self.forward_observed(outputs)

    def forward_observed(self, outputs: torch.Tensor) -> torch.Tensor:
        """G on the vector the server observes (probabilities for a ``softmax`` decoder)."""
        return self.network(outputs)
