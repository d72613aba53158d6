"""Data-parallel training (DDP) on the CPU: two processes talking over gloo.

The DDP run is a real ``vicious train`` command with ``train.strategy=ddp``,
``train.devices=2``; Lightning's launcher re-runs that command for rank 1, which is
why it runs as a subprocess and not inside pytest.

What it must equal, and why exactly: one process with the same per-process batch B
and ``train.accumulate_grad_batches=2``. Its k-th optimiser step averages the
gradients of global batches 2k and 2k + 1; under DDP rank r's k-th batch is global
batch 2k + r (``EpochSeededSampler``), with the same augmented copies (seeded by the
global batch number) and BatchNorm statistics over the same B images, and DDP
averages the two gradients. Halving is exact in floating point, so the trained
parameters agree to round-off, epoch after epoch (which also checks that every
epoch is reshuffled the same way).

Where they legitimately differ: BatchNorm *running* statistics. DDP keeps rank 0's
(broadcast before every forward pass), updated by half of the batches; one process
updates them with all. After 12 steps at momentum 0.1 that moves the test metrics of
these barely trained networks by 10-15% (measured: MSE 0.157 vs 0.141, accuracy 0.150
vs 0.175, SSIM 0.088 vs 0.102), hence the loose tolerance on the raw test metrics and
the tight one once the single process's running statistics are copied over.
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vicious.config.presets import get_preset
from vicious.config.schema import apply_overrides
from vicious.metrics import accuracy, mse, ssim
from vicious.runs.checkpoints import load_state
from vicious.runs.evaluation import evaluate_run
from vicious.runs.layout import open_run
from vicious.runs.training import train_run

BATCH = 40  # per process; 480 training images = 6 rounds of 2 x 40
# The paper's constant rate: the figures in the docstring were measured with it (the one-cycle
# rate of the -small presets moves the two runs' BatchNorm running statistics further apart).
BASE = ["data.train_limit=480", "data.val_limit=200", "data.test_limit=200", "model.depth=10", "model.width=1",
        "train.progress=false", "train.accelerator=cpu", "train.schedule=constant", "train.lr=0.001",
        # float32 and NCHW: the exactness argument above is float32's. precision=auto picks
        # bf16 on a CPU with AVX512-BF16, and there the two runs were measured to differ
        # beyond the 1e-5 below (bf16 round-off), which says nothing about DDP.
        "train.precision=32-true", "train.channels_last=false"]
TINY = BASE + ["train.epochs=2", f"train.batch_size={BATCH}"]
DDP = ["train.strategy=ddp", "train.devices=2"]


def _vicious_train(preset: str, out: Path, overrides: list[str]) -> None:
    command = shutil.which("vicious", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("the vicious command is not installed beside this Python")
    args = [command, "train", "--preset", preset, "--out", str(out), "--no-evaluate"]
    for override in overrides:
        args += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _vicious_train("fashion-mnist-vicious-small", root / "ddp", TINY + DDP)
    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), TINY + ["train.accumulate_grad_batches=2"])
    # One thread, as each DDP process has (OMP_NUM_THREADS=1): another thread count sums
    # in another order, and the comparison below is to 1e-5.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(config, root / "single")
    finally:
        torch.set_num_threads(threads)
    return root / "ddp", root / "single"


def _epoch_rows(run: Path) -> list[dict]:
    (log,) = run.glob("logs/joint/*/metrics.csv")
    rows = list(csv.DictReader(log.open()))
    return [{k: float(v) for k, v in row.items() if v} for row in rows]


def test_ddp_trains_the_parameters_one_process_trains_on_the_same_batches(runs):
    ddp, single = (load_state(run / "checkpoints/joint/last.ckpt.safetensors")["state_dict"] for run in runs)
    parameters = [name for name in single if not name.split(".")[-1].startswith(("running_", "num_batches"))]
    assert len(parameters) > 50 and set(ddp) == set(single)
    for name in parameters:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6, msg=name)
    # Epoch means of the training losses, all-reduced over the two processes (sync_dist).
    losses = [[r["train/loss"] for r in _epoch_rows(run) if "train/loss" in r] for run in runs]
    assert len(losses[0]) == 2
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_ddp_validation_metrics_are_those_of_the_selected_weights_on_the_whole_split(runs):
    ddp = runs[0]
    rows = [r for r in _epoch_rows(ddp) if "val/score" in r]
    logged = min(rows, key=lambda r: r["val/score"])  # the epoch whose weights were kept
    run = open_run(ddp)
    x = run.splits.val.float_images()
    with torch.no_grad():
        logits = run.classifier(x)
        x_rec = run.decoder(logits)
    assert len(x) == 200  # 100 per process, all counted once
    assert logged["val/accuracy"] == pytest.approx(float(accuracy(logits, run.splits.val.labels).mean()), abs=1e-6)
    assert logged["val/mse"] == pytest.approx(float(mse(x, x_rec).mean()), rel=1e-5)
    assert logged["val/ssim"] == pytest.approx(float(ssim(x, x_rec).mean()), rel=1e-4, abs=1e-6)


def test_ddp_test_metrics_match_one_process(runs):
    ddp_run, single_run = (open_run(run) for run in runs)
    ddp, single = evaluate_run(ddp_run, write=False), evaluate_run(single_run, write=False)
    # Raw: the BatchNorm running statistics differ (module docstring).
    assert ddp["accuracy"] == pytest.approx(single["accuracy"], abs=0.1)
    assert ddp["mse"] == pytest.approx(single["mse"], rel=0.25)
    assert ddp["ssim"] == pytest.approx(single["ssim"], abs=0.05)
    # With the single process's running statistics, the networks are the same.
    for mine, theirs in ((ddp_run.classifier, single_run.classifier), (ddp_run.decoder, single_run.decoder)):
        buffers = dict(theirs.named_buffers())
        for name, buffer in mine.named_buffers():
            buffer.copy_(buffers[name])
    same = evaluate_run(ddp_run, write=False)
    for key in ("accuracy", "mse", "ssim"):
        assert same[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key


def test_only_rank_zero_writes_and_the_honest_phases_run_under_ddp(tmp_path):
    out = tmp_path / "honest"
    small = ["data.train_limit=160", "data.val_limit=40", "train.epochs=1", "train.batch_size=40"]
    _vicious_train("fashion-mnist-honest-small", out, BASE + small + DDP)
    assert {"config.yaml", "environment.json", "classifier.safetensors", "decoder.safetensors",
            "training.json"} <= {p.name for p in out.iterdir()}
    # The decoder phase trained G on a frozen F: F is still the classifier phase's selection.
    frozen = load_state(out / "checkpoints/classifier/selected.safetensors")["classifier"]
    final = open_run(out).classifier.state_dict()
    for name, value in frozen.items():
        assert torch.equal(final[name], value), name
