"""The files an ONNX model refers to, read off its protobuf without loading it.

An ONNX model may keep its tensors in separate files next to it ("external data";
``torch.onnx.export`` writes ``model.onnx.data``). The sandboxed worker can read only
the files the audit shows it, so this process must know them first; loading the model
here (ONNX Runtime, or the ``onnx`` package) is what the sandbox exists to avoid. This
module walks the protobuf's wire format with a few fixed rules instead, over a memory
map, skipping every byte field it does not need (tensor data included), with bounds on
depth and on the number of fields, and returns the ``location`` of each tensor stored
externally (relative paths, checked by the caller) with the bytes its tensors need there
(the largest ``offset`` + ``length``): a data file shorter than that belongs to another export.

The fields read (onnx.proto, IR version 3 and later): ModelProto.graph (7), .functions
(25); GraphProto.node (1), .initializer (5), .sparse_initializer (15); FunctionProto.node
(7); NodeProto.attribute (5); AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
.sparse_tensor (22), .sparse_tensors (23); SparseTensorProto.values (1), .indices (2);
TensorProto.external_data (13) of StringStringEntryProto key (1) / value (2).
"""

from __future__ import annotations

import mmap
from pathlib import Path

MAX_DEPTH = 32  # graphs nested in attributes (If, Loop, Scan bodies); a real model nests a few
MAX_FIELDS = 2_000_000  # a WRN-28-10 export has ~10,000; bounded, so a crafted file costs seconds at most

# message kind -> {field number: message kind of that field}
_MESSAGES: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
}


class NotOnnx(ValueError):
    """The file is not an ONNX protobuf (or is damaged); says where."""


def external_locations(path: Path) -> dict[str, int]:
    """``{location: bytes needed}`` of the model's external tensors, locations in file order;
    bytes needed: the largest ``offset + length`` its tensors declare (0 where they give none)."""
    with path.open("rb") as file:
        if path.stat().st_size == 0:
            return {}
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            walker = _Walker(data)
            walker.message("model", 0, len(data), 0)
    return walker.needed


def _count(value: bytes | None, what: str) -> int:
    if value is None:
        return 0
    if not value.isdigit() or len(value) > 20:
        raise NotOnnx(f"an external tensor whose {what} is {value[:40]!r}, not a byte count")
    return int(value)


class _Walker:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.needed, self.fields = data, {}, 0

    def varint(self, at: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if at >= end or shift > 63:
                raise NotOnnx(f"a malformed number at byte {at}")
            byte = self.data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, at

    def message(self, kind: str, start: int, end: int, depth: int) -> dict[int, bytes]:
        """Walk one message; returns the key/value strings of an ``entry``, descends into the rest."""
        if depth > MAX_DEPTH:
            raise NotOnnx(f"messages nested deeper than {MAX_DEPTH} levels")
        children, strings = _MESSAGES[kind], {}
        entries: dict[bytes, bytes] = {}  # a tensor's external_data: location, offset, length
        at = start
        while at < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise NotOnnx(f"more than {MAX_FIELDS} fields")
            key, at = self.varint(at, end)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, at = self.varint(at, end)
            elif wire == 1:
                at += 8
            elif wire == 5:
                at += 4
            elif wire == 2:
                length, at = self.varint(at, end)
                if at + length > end:
                    raise NotOnnx(f"a field longer than its message at byte {at}")
                if number in children:
                    child = self.message(children[number], at, at + length, depth + 1)
                    if children[number] == "entry" and 1 in child and 2 in child:
                        entries[child[1]] = child[2]
                elif kind == "entry" and number in (1, 2):
                    strings[number] = bytes(self.data[at : min(at + length, at + 4096)])
                at += length
            else:
                raise NotOnnx(f"an unknown wire type {wire} at byte {at}")
            if at > end:
                raise NotOnnx("a field past the end of its message")
        if b"location" in entries:
            location = entries[b"location"].decode("utf-8", errors="surrogateescape")
            extent = _count(entries.get(b"offset"), "offset") + _count(entries.get(b"length"), "length")
            self.needed[location] = max(self.needed.get(location, 0), extent)
        return strings
