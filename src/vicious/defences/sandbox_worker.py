"""The worker process that loads and runs one untrusted model for an audit.

Started by :mod:`vicious.defences.sandbox` as ``python -I -m vicious.defences.sandbox_worker``,
inside bubblewrap where available, with its resource limits already set. It reads frames
(:mod:`vicious.defences.sandbox_protocol`) on stdin and answers on stdout:

    parent -> worker   {"op": "load", "kind", "path", "threads", ...}      (once)
    worker -> parent   {"op": "started"}                                  (libraries imported)
    worker -> parent   {"ok": true, "meta": {...}} or {"ok": false, "kind", "message"}
    parent -> worker   {"op": "predict", "shape": [n, C, S, S]} + float32 images
    worker -> parent   {"ok": true, "shape", "dtype"} + outputs, or {"ok": false, "kind", "message"[, "dtype"]}

``kind`` of a failure: ``memory`` (an allocation failed: the memory limit), ``dtype`` (the
outputs are of a type the protocol does not carry), ``error`` (anything else the model
raised). Everything before the model is loaded is trusted code of this project; once it is
loaded, the parent trusts nothing this process sends beyond what it checks.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

# Allocation failures as torch's and ONNX Runtime's allocators word them (also wrapped in
# TorchScript's "The following operation failed in the TorchScript interpreter").
_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "bad allocation",
                 "out of memory", "failed to allocate", "memoryerror")


def _protect_self() -> tuple[BinaryIO, BinaryIO]:
    """Before anything else: die with the parent, keep the protocol pipes away from the model."""
    try:  # PR_SET_PDEATHSIG: also without bubblewrap's --die-with-parent, never outlive the audit
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # A write past RLIMIT_FSIZE (0) fails with EFBIG instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # The model may print (TorchScript's print writes to fd 1): the frames get their own
    # descriptors and fd 1 goes to stderr, which the parent only drains.
    proto_in, proto_out = os.fdopen(os.dup(0), "rb", buffering=0), os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    return proto_in, proto_out


def _read_exact(stream: BinaryIO, n: int) -> bytearray:
    buffer = bytearray(n)
    view, done = memoryview(buffer), 0
    while done < n:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError("the audit closed the pipe")
        done += got
    return buffer


def _receive(stream: BinaryIO) -> tuple[dict[str, Any], bytearray]:
    from vicious.defences.sandbox_protocol import LENGTH

    (length,) = LENGTH.unpack(_read_exact(stream, LENGTH.size))
    header = json.loads(bytes(_read_exact(stream, length)))
    return header, _read_exact(stream, int(header.get("nbytes", 0)))


def _send(stream: BinaryIO, header: dict[str, Any], payload: Any = b"") -> None:
    from vicious.defences.sandbox_protocol import frame

    for piece in frame(header, payload):
        view, done = memoryview(piece).cast("B"), 0
        while done < len(view):
            done += stream.write(view[done:])


def _failure(err: BaseException) -> dict[str, Any]:
    text = f"{type(err).__name__}: {err}".lower()
    kind = "memory" if isinstance(err, MemoryError) or any(w in text for w in _MEMORY_WORDS) else "error"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    # TorchScript's first line is generic ("The following operation failed in the TorchScript
    # interpreter."); the operation's own error is the last line, under its traceback.
    message = lines[0] if lines else type(err).__name__
    if len(lines) > 1 and "TorchScript interpreter" in message:
        message = lines[-1]
    return {"ok": False, "kind": kind, "message": message[:300]}


def main() -> int:
    proto_in, proto_out = _protect_self()
    import torch

    from vicious.defences import model_formats
    from vicious.defences.sandbox_protocol import NAMES, tensor_bytes

    try:
        request, _ = _receive(proto_in)
    except EOFError:
        return 0
    torch.set_num_threads(int(request.get("threads", 1)))  # as the parent's: equal sums, equal scores
    if request["kind"] == "onnx":
        import onnxruntime  # noqa: F401 - imported before "started": libraries, not the model's time
    elif request["kind"] == "run":
        import vicious.runs.checkpoints  # noqa: F401
    _send(proto_out, {"op": "started"})
    try:
        predict, meta = model_formats.load(request, Path(request["path"]))
    except BaseException as err:  # noqa: BLE001 - whatever the model's loader raises goes back as one line
        _send(proto_out, _failure(err))
        return 0
    _send(proto_out, {"ok": True, "meta": meta})
    while True:
        try:
            header, payload = _receive(proto_in)
        except EOFError:
            return 0
        if header.get("op") != "predict":
            return 0
        images = torch.frombuffer(payload, dtype=torch.float32).view(*header["shape"]) if payload else \
            torch.empty(header["shape"])
        try:
            with torch.no_grad():
                out = torch.as_tensor(predict(images))
            if out.dtype not in NAMES:
                _send(proto_out, {"ok": False, "kind": "dtype", "dtype": str(out.dtype).removeprefix("torch."),
                                  "message": f"outputs of type {out.dtype}"})
                continue
            _send(proto_out, {"ok": True, "shape": list(out.shape), "dtype": NAMES[out.dtype]}, tensor_bytes(out))
        except BaseException as err:  # noqa: BLE001 - the model's failure on a batch, as one line
            _send(proto_out, _failure(err))


if __name__ == "__main__":
    sys.exit(main())
