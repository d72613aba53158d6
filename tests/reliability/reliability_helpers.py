"""Helpers for the reliability tests: tiny runs of the real ``vicious`` command.

``launch`` runs ``vicious.cli.main(ARGS)`` in a separate process, forked from a
server that has imported torch, Lightning and vicious once (each run would otherwise
spend ~5 CPU seconds importing them). With ``hang_at`` the process stops (sleeps,
touching a marker file) at one chosen moment: a training batch
``batch:PHASE:EPOCH:BATCH`` or the n-th rename onto a file, ``publish:NAME:N``. The
test then SIGKILLs it there: a kill at a known point instead of a guess from timing.
``sigterm:PHASE:EPOCH:BATCH`` instead sends the process SIGTERM at that batch. The
patch changes when the process stops, never what it computes.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

# Tiny but real: 100 images at 16×16 (doubled by augmentation), 4 batches of 25 per epoch, 2 epochs.
TINY = [
    "--set", "data.train_limit=100", "--set", "data.val_limit=50", "--set", "data.test_limit=50",
    "--set", "data.image_size=16", "--set", "train.epochs=2", "--set", "train.batch_size=25",
    "--set", "train.progress=false", "--set", "data.augment=true", "--set", "train.accelerator=cpu",
]
# One epoch on 50 images, no augmentation: for runs whose files the tests then open or tamper with.
ONE_EPOCH = [
    "--set", "data.train_limit=50", "--set", "data.val_limit=50", "--set", "data.test_limit=50",
    "--set", "train.epochs=1", "--set", "train.batch_size=50", "--set", "train.progress=false",
    "--set", "data.augment=false", "--set", "train.accelerator=cpu",
]
_PRELOAD = ["vicious.cli", "vicious.runs.training", "vicious.runs.evaluation", "reliability_helpers"]


@functools.cache
def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}):
        multiprocessing.forkserver.ensure_running()
    return context


def _hang(marker: str) -> None:
    Path(marker).touch()
    time.sleep(600)


def _install_hang(hang_at: str, marker: str) -> None:
    kind, *where = hang_at.split(":")
    if kind in ("batch", "sigterm"):
        from vicious.attack import lightning_module

        phase, epoch, batch = where[0], int(where[1]), int(where[2])
        step = lightning_module.AttackModule.training_step

        def training_step(self, data, batch_idx):
            if self.phase == phase and self.current_epoch == epoch and batch_idx == batch:
                if kind == "sigterm":  # as a job scheduler stops a job: the process carries on until it sees it
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    _hang(marker)
            return step(self, data, batch_idx)

        lightning_module.AttackModule.training_step = training_step
    elif kind == "publish":
        name, remaining = where[0], [int(where[1])]
        replace = os.replace

        def publish(src, dst, *args, **kwargs):
            if Path(dst).name == name:
                remaining[0] -= 1
                if remaining[0] == 0:
                    _hang(marker)
            return replace(src, dst, *args, **kwargs)

        os.replace = publish
    else:
        raise ValueError(f"unknown hang point {hang_at!r}")


def _child(args: list[str], log: str, hang_at: str | None, marker: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # Float sums are only bit-identical for equal thread counts: one, in every process.
    torch.set_num_threads(1)
    if hang_at:
        _install_hang(hang_at, marker)
    from vicious.cli import main

    sys.exit(main(args))


def launch(args: list[str], tmp: Path, hang_at: str | None = None):
    """Start ``vicious ARGS`` in its own process; with ``hang_at`` it stops there."""
    stamp = time.monotonic_ns()
    log, marker = tmp / f"log-{stamp}.txt", tmp / f"hung-{stamp}"
    process = _context().Process(target=_child, args=(args, str(log), hang_at, str(marker)))
    process.start()
    process.log_path, process.marker = log, marker
    return process


def _output(process) -> str:
    return process.log_path.read_text()[-3000:] if process.log_path.exists() else ""


def finish(process, timeout: float = 300, status: int = 0) -> None:
    """Wait for a process to end with ``status``."""
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        pytest.fail(f"vicious did not finish within {timeout} s:\n{_output(process)}")
    assert process.exitcode == status, _output(process)


def kill_when_hung(process, timeout: float = 300) -> None:
    """SIGKILL the process once it has reached its hang point."""
    deadline = time.monotonic() + timeout
    while not process.marker.exists():
        if process.exitcode is not None:
            pytest.fail(f"process ended before its kill point:\n{_output(process)}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("process never reached its kill point")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join(30)
    assert process.exitcode == -signal.SIGKILL


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("classifier", "decoder")
            for k, v in load_file(run / f"{name}.safetensors").items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
