"""Helpers for the reliability tests: tiny runs of the real ``vicious`` command.

``launch`` starts ``vicious`` in a subprocess. With ``hang_at`` it first patches the
process so that it stops (sleeps, touching a marker file) at one chosen moment:
a training batch ``(phase, epoch, batch)`` or the rename that publishes the n-th
``last.ckpt``. The test then SIGKILLs it there, which is a kill at a known point
instead of a guess from timing. The patch changes when the process stops, never
what it computes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# Tiny but real: 100 images at 16×16 (doubled by augmentation), 4 batches of 25 per epoch, 2 epochs.
TINY = [
    "--set", "data.train_limit=100", "--set", "data.val_limit=50", "--set", "data.test_limit=50",
    "--set", "data.image_size=16", "--set", "train.epochs=2", "--set", "train.batch_size=25",
    "--set", "train.progress=false", "--set", "data.augment=true", "--set", "train.accelerator=cpu",
]

_HANG = r"""
import os, sys, time
from pathlib import Path
kind, *where = os.environ["VICIOUS_TEST_HANG_AT"].split(":")
marker = Path(os.environ["VICIOUS_TEST_MARKER"])

def hang():
    marker.touch()
    time.sleep(600)

if kind == "batch":
    from vicious.attack import lightning_module as lm
    phase, epoch, batch = where[0], int(where[1]), int(where[2])
    step = lm.AttackModule.training_step
    def training_step(self, data, batch_idx):
        if self.phase == phase and self.current_epoch == epoch and batch_idx == batch:
            hang()
        return step(self, data, batch_idx)
    lm.AttackModule.training_step = training_step
elif kind == "publish":  # the n-th rename onto a file called where[0]
    name, count = where[0], [int(where[1])]
    replace = os.replace
    def patched(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            count[0] -= 1
            if count[0] == 0:
                hang()
        return replace(src, dst, *args, **kwargs)
    os.replace = patched

from vicious.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    # Same thread count in every process: float sums are only bit-identical for equal thread counts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def launch(args: list[str], tmp: Path, hang_at: str | None = None) -> subprocess.Popen:
    """Start ``vicious ARGS``; with ``hang_at`` it stops there (see module docstring)."""
    env = _env()
    if hang_at is None:
        command = [sys.executable, "-m", "vicious.cli", *args]
    else:
        env["VICIOUS_TEST_HANG_AT"] = hang_at
        env["VICIOUS_TEST_MARKER"] = str(tmp / f"hung-{abs(hash(hang_at))}")
        command = [sys.executable, "-c", _HANG, *args]
    log = open(tmp / f"log-{time.monotonic_ns()}.txt", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = Path(log.name)  # type: ignore[attr-defined]
    process.marker = Path(env.get("VICIOUS_TEST_MARKER", tmp / "none"))  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    """Wait for a process to succeed; returns its output."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = process.log_path.read_text()  # type: ignore[attr-defined]
    assert process.returncode == 0, output[-3000:]
    return output


def kill_when_hung(process: subprocess.Popen, timeout: float = 240) -> None:
    """SIGKILL the process once it has reached its hang point."""
    deadline = time.monotonic() + timeout
    while not process.marker.exists():  # type: ignore[attr-defined]
        if process.poll() is not None:
            pytest.fail(f"process ended before its kill point:\n{process.log_path.read_text()[-3000:]}")  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("process never reached its kill point")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("classifier", "decoder")
            for k, v in load_file(run / f"{name}.safetensors").items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
