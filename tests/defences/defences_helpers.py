"""Tiny classifiers and their exports, shared by the defences tests (imported by name)."""

from __future__ import annotations

import warnings

import torch

from vicious.data import DatasetInfo
from vicious.models import create_model

FASHION = DatasetInfo("fashion-mnist", 10, 1, "multiclass", tuple(f"class {i}" for i in range(10)))


def tiny_classifier(channels: int = 1, outputs: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("wrn-classifier", depth=10, width=1, in_channels=channels, num_outputs=outputs,
                        mean=(0.3,), std=(0.3,)).eval()


def export_torchscript(model: torch.nn.Module, path, size: int = 32, channels: int | None = None) -> None:
    channels = channels or model.stem.in_channels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, torch.rand(2, channels, size, size)).save(str(path))


def export_onnx(model: torch.nn.Module, path, size: int = 32, dynamic: bool = True) -> None:
    channels = model.stem.in_channels
    example = torch.rand(4, channels, size, size)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=shapes, verbose=False)
