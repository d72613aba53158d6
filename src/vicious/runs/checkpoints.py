"""Checkpoints and weights in safetensors: loading never unpickles anything.

Lightning's training state (weights, optimiser moments, loop counters, callback
state) is a nested structure of tensors and plain values. ``SafetensorsCheckpointIO``
stores the tensors in a safetensors file and the rest as JSON in the file's
metadata, so one ``.ckpt.safetensors`` file holds everything and reading it can run no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

import vicious
from vicious.runs.files import atomic_write_bytes

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


# Lightning's training state nests about a dozen levels deep (as stored, with the wrappers).
MAX_DEPTH = 64


class _Damaged(ValueError):
    """A stored structure that ``_flatten`` cannot have written; says what and where."""


def _at(where: str) -> str:
    return where if len(where) <= 120 else f"...{where[-117:]}"  # keys come from the file: any length


def _unflatten(value: Any, tensors: dict[str, torch.Tensor], where: str = "checkpoint", depth: int = 0) -> Any:
    """Rebuild what ``_flatten`` stored, checking each entry: the structure comes from the file."""
    if depth > MAX_DEPTH:
        raise _Damaged(f"nesting deeper than {MAX_DEPTH} levels at {_at(where)}")
    if isinstance(value, list):
        return [_unflatten(v, tensors, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise _Damaged(f"unrecognised entry {[k[:40] for k in sorted(value)[:3]]} at {_at(where)}")
    (kind, inner), = value.items()
    if kind == "__tensor__":
        if not isinstance(inner, str) or inner not in tensors:
            what = repr(inner[:40]) if isinstance(inner, str) else f"of type {type(inner).__name__}"
            raise _Damaged(f"a reference to a tensor {what} the file does not hold at {_at(where)}")
        return tensors[inner]
    if kind == "__dict__" and isinstance(inner, dict):
        return {k: _unflatten(v, tensors, f"{where}.{k}", depth + 1) for k, v in inner.items()}
    if kind == "__items__" and isinstance(inner, list):
        out = {}
        for item in inner:
            if not (isinstance(item, list) and len(item) == 2):
                raise _Damaged(f"a mapping item that is not a [key, value] pair at {_at(where)}")
            key = _key(item[0], where)
            out[key] = _unflatten(item[1], tensors, f"{where}[{key!r}]", depth + 1)
        return out
    if kind == "__tuple__" and isinstance(inner, list):
        return tuple(_unflatten(v, tensors, f"{where}[{i}]", depth + 1) for i, v in enumerate(inner))
    raise _Damaged(f"unrecognised entry {kind[:40]!r} holding {type(inner).__name__} at {_at(where)}")


def _key(k: Any, where: str) -> Any:
    """A mapping key as ``_flatten`` stored it: a scalar, or a tuple of scalars stored as a list."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(k, list) and all(isinstance(part, scalar) for part in k):
        return tuple(k)
    if isinstance(k, scalar):
        return k
    raise _Damaged(f"a mapping key that is neither a scalar nor a list of scalars at {_at(where)}")


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


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, from its header alone (safetensors' own
    parser, which bounds the header and checks it against the file); refuses anything else."""
    try:
        with safe_open(Path(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise UnsafeFileError(f"{path} is not a valid safetensors file ({err}); export weights with vicious train") from None


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
    try:
        return _unflatten(json.loads(metadata[_METADATA_KEY]), tensors)
    except (_Damaged, ValueError, RecursionError) as err:  # RecursionError: json's own nesting limit
        problem = err if isinstance(err, _Damaged) else f"unreadable structure ({type(err).__name__})"
        raise _refused(path, problem) from None


def _refused(path: Path, problem: object) -> UnsafeFileError:
    return UnsafeFileError(f"{path} is damaged or was altered: {problem}; delete it to train that phase again, "
                           "or restore it from a copy")


def check_weights(state: Any, key: str, path: Path, model_state: dict[str, torch.Tensor] | None = None) -> dict:
    """``state[key]``, refused unless it maps names to tensors (those of ``model_state``, of the same shapes)."""
    weights = state.get(key) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise _refused(path, f"{key} is not a mapping of names to tensors")
    if model_state is not None:
        missing, unexpected = sorted(set(model_state) - set(weights)), sorted(set(weights) - set(model_state))
        if missing or unexpected:
            raise _refused(path, f"{key} lacks {missing[:2]} and has unexpected {[k[:80] for k in unexpected[:2]]}")
        wrong = [k for k, v in weights.items() if v.shape != model_state[k].shape]
        if wrong:
            raise _refused(path, f"{key}[{wrong[0]!r}] has shape {tuple(weights[wrong[0]].shape)}, the model "
                                 f"{tuple(model_state[wrong[0]].shape)}")
    return weights


# What Lightning indexes into when it resumes, with the type each must have.
_TRAINING_STATE = {"epoch": int, "global_step": int, "state_dict": dict, "loops": dict, "callbacks": dict,
                   "optimizer_states": list, "lr_schedulers": list}


def check_training_state(state: Any, path: Path, model_state: dict[str, torch.Tensor] | None = None) -> None:
    """Refuse a Lightning training state that resuming would trip over with a traceback.

    The parts Lightning reads must have the types it expects (loops: mappings of counters;
    optimizers and schedulers: mappings), and ``state_dict`` the tensors of ``model_state``
    (the model being resumed): the same names and shapes."""
    def refuse(problem: str):
        raise _refused(path, problem)

    if not isinstance(state, dict):
        refuse("the training state is not a mapping")
    for key, kind in _TRAINING_STATE.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            refuse(f"{key} is {type(state.get(key)).__name__ if key in state else 'missing'}, not {kind.__name__}")
    check_weights(state, "state_dict", path, model_state)
    for i, optimizer in enumerate(state["optimizer_states"]):
        groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
        if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                and all(isinstance(v, dict) for v in optimizer["state"].values()) and isinstance(groups, list)
                and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)):
            refuse(f"optimizer_states[{i}] is not an optimizer state (state and param_groups)")
    if not all(isinstance(s, dict) for s in state["lr_schedulers"]):
        refuse("lr_schedulers holds entries that are not mappings")
    if not all(isinstance(c, dict) for c in state["callbacks"].values()):
        refuse("callbacks holds entries that are not mappings")

    def counters(value: Any, where: str) -> None:
        for key, inner in value.items():
            if isinstance(inner, dict):
                counters(inner, f"{where}.{key}")
            elif not isinstance(inner, int):  # bool is an int: is_last_batch
                refuse(f"{where}.{key} is {type(inner).__name__}, not a counter")

    counters(state["loops"], "loops")


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
        # load_state_dict would convert silently: float bytes relabelled as int32 become other numbers.
        if tensor.dtype != expected[name].dtype:
            raise UnsafeFileError(
                f"{path}: {name} is stored as {tensor.dtype}, the model's is {expected[name].dtype}; "
                "the file was altered or is not these weights: use the weights the run wrote"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UnsafeFileError(
                f"{path}: {name} holds NaN or infinite values; the weights are damaged (or training diverged): "
                "retrain the run, or restore the file from a copy"
            )
    module.load_state_dict(tensors)
    return metadata


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O that writes and reads safetensors, never pickle.

    ``model_state``: the state_dict of the model that a loaded checkpoint resumes; a
    checkpoint is checked against it (and for the types Lightning expects) when read."""

    def __init__(self, model_state: dict[str, torch.Tensor] | None = None) -> None:
        self.model_state = model_state

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_state(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        state = load_state(Path(path))
        check_training_state(state, Path(path), self.model_state)
        return state

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
