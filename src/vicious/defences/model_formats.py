"""Loading a classifier file into a ``predict`` function, one loader per format.

This is what runs inside the sandbox's worker process (:mod:`vicious.defences.sandbox_worker`),
next to the untrusted model; the trusted parent only ever sees the plain values these
loaders return. It therefore imports nothing but torch at start-up (ONNX Runtime and the
weights reader are imported by the loader that needs them) and its errors name no paths:
the worker sees the model at a fixed path of its own, and the parent says which file it was.

Every loader returns ``(predict, meta)``: ``predict(images (n, C, S, S) float32) -> outputs``
of whatever type and shape the model gives (the parent checks them), and ``meta``, a
JSON-able dict the parent validates (for ONNX, the declared inputs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

KINDS = ("torchscript", "onnx", "run")

Predict = Callable[[torch.Tensor], Any]


def load(request: dict[str, Any], path: Path) -> tuple[Predict, dict[str, Any]]:
    """The model ``request["kind"]`` at ``path`` (a file; for a run, its classifier weights)."""
    kind = request["kind"]
    if kind == "torchscript":
        return load_torchscript(path), {}
    if kind == "onnx":
        return load_onnx(path)
    if kind == "run":
        return load_run_weights(path, request), {}
    raise ValueError(f"unknown model kind {kind!r}; one of {KINDS}")


def load_torchscript(path: Path) -> Predict:
    with warnings.catch_warnings():  # TorchScript's deprecation notice is not the user's problem here
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module


def load_onnx(path: Path) -> tuple[Predict, dict[str, Any]]:
    """(predict, {"inputs": [{name, type, shape}], "outputs": [names]}); shape entries are
    ints for static sizes and None or a name for dynamic ones."""
    import numpy as np
    import onnxruntime

    # By path: tensors kept in external files resolve next to it, and only to the files the
    # parent checked and showed the worker (vicious.defences.onnx_files).
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    meta = {
        "inputs": [{"name": str(i.name), "type": str(i.type), "shape": [_dim(d) for d in i.shape]} for i in inputs],
        "outputs": [str(o.name) for o in outputs],
    }
    if len(inputs) != 1 or not outputs:  # the parent refuses it from meta, naming the inputs
        return _refused, meta
    name, output_name = inputs[0].name, outputs[0].name

    def predict(images: torch.Tensor) -> torch.Tensor:
        (result,) = session.run([output_name], {name: np.ascontiguousarray(images.numpy(), dtype=np.float32)})
        return torch.from_numpy(np.asarray(result))

    return predict, meta


def load_run_weights(path: Path, request: dict[str, Any]) -> Predict:
    """A run's classifier, built from the architecture the parent read off the run's config
    (or the weights file's metadata) and the auditor's dataset (channels, K), with the
    weights in ``path`` (safetensors)."""
    from vicious.models import create_classifier, outputs_to_probabilities
    from vicious.runs.checkpoints import load_weights

    classifier = create_classifier(
        str(request.get("classifier", "wrn")), depth=int(request["depth"]), width=int(request["width"]),
        in_channels=int(request["channels"]), num_outputs=int(request["num_outputs"]),
    )
    # mean and std are buffers of the classifier: the weights file sets them.
    load_weights(classifier, path, dict(request["expect"]))
    classifier.eval()
    task, released = request["task"], request["released"]

    def predict(images: torch.Tensor) -> torch.Tensor:
        logits = classifier(images)
        return outputs_to_probabilities(logits, task) if released == "probabilities" else logits

    return predict


def _dim(d: Any) -> int | str | None:
    if isinstance(d, int) and not isinstance(d, bool):
        return d
    return None if d is None else str(d)[:100]


def _refused(images: torch.Tensor) -> Any:
    raise ValueError("this model takes other inputs than one image batch")
