"""The frames the audit and its sandboxed model worker exchange over two pipes.

A frame is ``length (4 bytes, big-endian) | header (JSON, UTF-8) | payload (raw bytes)``;
the header says how many payload bytes follow (``nbytes``) and, for a tensor, its
``shape`` and ``dtype`` (a name in :data:`DTYPES`). Nothing is ever pickled: the worker
runs an untrusted model, so the parent reads its frames as data only and checks every
size before it allocates anything (:mod:`vicious.defences.sandbox`).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import torch

HEADER_LIMIT = 64 * 1024  # a header holds a few names and numbers
LENGTH = struct.Struct(">I")

# Tensor types a model may return; any other is reported by name, without data.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


def frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """The pieces of one frame, to write in order; sets ``header["nbytes"]``."""
    header = {**header, "nbytes": len(payload) if isinstance(payload, bytes) else payload.nbytes}
    text = json.dumps(header, allow_nan=False).encode()
    if len(text) > HEADER_LIMIT:
        raise ValueError(f"frame header of {len(text)} bytes, more than {HEADER_LIMIT}")
    return [LENGTH.pack(len(text)), text, payload]


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor (any dtype, also bfloat16, which numpy lacks)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def itemsize(name: str) -> int:
    return torch.empty((), dtype=DTYPES[name]).element_size()
