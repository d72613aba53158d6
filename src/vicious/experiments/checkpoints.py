"""Checkpoints and weights in safetensors: loading never unpickles anything.

Lightning's training state (weights, optimiser moments, loop counters, callback
state) is a nested structure of tensors and plain values. ``SafetensorsCheckpointIO``
stores the tensors in a safetensors file and the rest as JSON in the file's
metadata, so one ``.ckpt`` file holds everything and reading it can run no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

import vicious
from vicious.experiments.files import atomic_write_bytes

_METADATA_KEY = "vicious_structure"
_VERSION_KEY = "vicious_version"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / torch.save zip archives


class UnsafeFileError(ValueError):
    """A file that is not safetensors (e.g. a pickle) was offered as weights or a checkpoint."""


def _flatten(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _flatten(v, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {"__items__": [[k, _flatten(v, tensors, f"{path}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} at {path} in a safetensors checkpoint")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__dict__" in value:
        return {k: _unflatten(v, tensors) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {_key(k): _unflatten(v, tensors) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_unflatten(v, tensors) for v in value["__tuple__"])
    raise ValueError(f"unrecognised checkpoint structure entry: {sorted(value)}")


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def save_state(state: dict[str, Any], path: Path) -> None:
    """Write a nested state (tensors and plain values) atomically as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "checkpoint")
    metadata = {_METADATA_KEY: json.dumps(structure), _VERSION_KEY: vicious.__version__}
    atomic_write_bytes(Path(path), save_safetensors_bytes(tensors, metadata=metadata))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint or weights file not found: {path}")
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    looks_safetensors = 0 < header_len <= len(data) - 8 and data[8:9] == b"{"
    if not looks_safetensors and (data[:1] == _PICKLE_MAGIC[0] or data[:4] == _PICKLE_MAGIC[1]):
        raise UnsafeFileError(
            f"{path} is a pickle/torch.save file, which can run code when loaded; "
            "vicious only loads safetensors weights (convert it with safetensors.torch.save_file on a trusted machine)"
        )
    try:
        tensors = load_safetensors_bytes(data)
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise UnsafeFileError(f"{path} is not a valid safetensors file ({err}); it may be truncated or not weights") from None
    return tensors, metadata


def load_state(path: Path) -> dict[str, Any]:
    """Read what ``save_state`` wrote; refuses pickles, anything not safetensors, and
    checkpoints of another vicious major.minor version (their state may not fit this code)."""
    tensors, metadata = _read_safetensors(path)
    if _METADATA_KEY not in metadata:
        raise UnsafeFileError(f"{path} is a safetensors file but not a vicious checkpoint (no training state)")
    written = metadata.get(_VERSION_KEY, vicious.__version__)
    if not vicious.reads_version(written):
        raise ValueError(
            f"{path} was written by vicious {written}, this is vicious {vicious.__version__}; "
            "resume it with the version that wrote it, or start a new run"
        )
    return _unflatten(json.loads(metadata[_METADATA_KEY]), tensors)


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """A module's state_dict as a plain safetensors file, written atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(Path(path), save_safetensors_bytes(state, metadata=metadata))


def load_weights(module: torch.nn.Module, path: Path, expect: dict[str, str] | None = None) -> dict[str, str]:
    """Load safetensors weights into ``module`` (strict); returns the file's metadata.

    ``expect``: metadata values the file must have where it records them (e.g. the
    dataset it was trained on); a difference is refused, naming it.
    """
    tensors, metadata = _read_safetensors(path)
    differences = [f"{key} {metadata[key]!r} (expected {value!r})" for key, value in (expect or {}).items()
                   if key in metadata and metadata[key] != value]
    if differences:
        raise ValueError(
            f"{path} was trained for {', '.join(differences)}; "
            "use weights trained for this dataset, or open the run they belong to"
        )
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "was it trained with another depth, width or dataset?"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}; "
                "was it trained with another depth, width or dataset?"
            )
    module.load_state_dict(tensors)
    return metadata


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O that writes and reads safetensors, never pickle."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_state(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        return load_state(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
