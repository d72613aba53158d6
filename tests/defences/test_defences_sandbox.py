"""The audit reads a sandboxed worker's replies as untrusted data: crafted frames are refused
in one line, before anything of the size they announce is allocated."""

from __future__ import annotations

import json
import os
import types
import weakref

import pytest
import torch

from vicious.defences.sandbox import ModelProcess, SandboxError, SandboxLimits
from vicious.defences.sandbox_protocol import LENGTH, frame, tensor_bytes


def _replying(data: bytes) -> ModelProcess:
    """A ModelProcess whose worker has already written ``data`` and exited."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    stdout = open(read, "rb", buffering=0)  # noqa: SIM115 - closed by the finalizer below
    process = types.SimpleNamespace(stdout=stdout, poll=lambda: 0, wait=lambda timeout=None: 0)
    model = ModelProcess.__new__(ModelProcess)
    model._worker = types.SimpleNamespace(process=process, stderr_tail=bytearray())
    model.source, model.limits, model.confined, model._paths = "model m.pt", SandboxLimits(wall_s=5), True, {}
    model._finalizer = weakref.finalize(model, process.stdout.close)
    return model


def _raw(header: dict, payload: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return LENGTH.pack(len(text)) + text + payload


def test_a_well_formed_reply_is_read_back_exactly():
    out = torch.randn(3, 10)
    model = _replying(b"".join(bytes(p) for p in frame({"ok": True, "shape": [3, 10], "dtype": "float32"},
                                                        tensor_bytes(out))))
    _, payload = model._receive(float("inf"), "on one batch", max_values=3 * 100_000)
    assert torch.equal(torch.frombuffer(payload, dtype=torch.float32).view(3, 10), out)


@pytest.mark.parametrize("reply, words", [
    (LENGTH.pack(1 << 31), "announced a header of 2147483648 bytes"),
    (LENGTH.pack(5) + b"{nope", "not JSON"),
    (LENGTH.pack(20000) + b"[" * 20000, "not JSON"),
    (_raw({"ok": True, "shape": [3, -1], "dtype": "float32", "nbytes": 0}), "valid shape"),
    (_raw({"ok": True, "shape": [3, 10], "dtype": "object", "nbytes": 120}), "unknown type"),
    (_raw({"ok": True, "shape": [100_000_000, 1000], "dtype": "float32", "nbytes": 4 * 10**11}),
     "more than any classifier gives"),
    (_raw({"ok": True, "shape": [3, 10], "dtype": "float32", "nbytes": 7}), "does not match its shape"),
    (_raw({"ok": False, "kind": "error", "nbytes": 1 << 40}), "data it was not asked for"),
    (_raw({"ok": True, "shape": [3, 10], "dtype": "float32", "nbytes": 120}, b"\0" * 50), "ended"),  # cut short
])
def test_crafted_replies_are_refused_in_one_line(reply, words):
    model = _replying(reply)
    with pytest.raises(SandboxError, match=words) as caught:
        model._receive(float("inf"), "on one batch", max_values=3 * 100_000)
    assert "\n" not in str(caught.value)


def test_the_models_error_text_is_made_printable():
    model = _replying(b"")
    with pytest.raises(ValueError, match=r"^bad \[31m input$"):
        model._check_failure({"ok": False, "kind": "error", "message": "bad \x1b[31m\n input"}, "on one batch")
