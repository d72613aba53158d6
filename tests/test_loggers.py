"""train.logger: the CSV log always, TensorBoard (or W&B, MLflow) beside it when asked,
with the training loss every train.log_every_n_steps steps; and the run's provenance."""

import csv
import json
import subprocess

import pytest

from vicious.cli import main

# 300 images in batches of 50: 6 optimiser steps per epoch, 2 epochs.
TINY = ["--set", "data.train_limit=300", "--set", "data.val_limit=100", "--set", "data.test_limit=100",
        "--set", "train.epochs=2", "--set", "train.batch_size=50", "--set", "model.depth=10",
        "--set", "train.progress=false", "--no-evaluate"]


def _csv_rows(run, phase):
    (path,) = (run / "logs" / phase).glob("version_*/metrics.csv")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_tensorboard_gets_the_step_losses_the_csv_log_holds(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--out", str(run), *TINY,
                 "--set", "train.logger=tensorboard", "--set", "train.log_every_n_steps=2"]) == 0
    csv_steps = {int(r["step"]): float(r["train/loss_step"]) for r in _csv_rows(run, "joint") if r.get("train/loss_step")}
    # 12 steps logged every 2nd: Lightning logs after steps 2, 4, ... (step index 1, 3, ...)
    assert sorted(csv_steps) == [1, 3, 5, 7, 9, 11]
    (events,) = (run / "logs" / "tensorboard" / "joint").glob("version_*/events.out.tfevents.*")
    board = EventAccumulator(str(events.parent))
    board.Reload()
    tb_steps = {e.step: e.value for e in board.Scalars("train/loss_step")}
    assert tb_steps.keys() == csv_steps.keys()
    assert all(tb_steps[s] == pytest.approx(csv_steps[s], rel=1e-6) for s in csv_steps)
    # Per-epoch values reach TensorBoard too: one validation SSIM per epoch.
    assert len(board.Scalars("val/ssim")) == 2


def test_a_logger_that_is_not_installed_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    run = tmp_path / "run"
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--out", str(run), *TINY,
                 "--set", "train.logger=wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.logger=wandb needs the wandb package: pip install wandb" in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_a_run_folder_records_its_command_commit_and_times(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--preset", "fashion-mnist-honest-small", "--out", str(run), *TINY]) == 0
    environment = json.loads((run / "environment.json").read_text())
    training = json.loads((run / "training.json").read_text())
    assert environment["started"] <= training["finished"]  # ISO 8601 UTC sorts as time does
    assert environment["started"].endswith("+00:00")
    assert environment["command"]  # pytest's command line here; `vicious train ...` from the shell
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if environment["source_commit"] is not None:  # a git checkout of vicious
        assert environment["source_commit"].removesuffix("+dirty") == head
    # One copy of the selected weights per finished phase, beside the resumable last.ckpt.
    for phase in ("classifier", "decoder"):
        assert sorted(p.name for p in (run / "checkpoints" / phase).iterdir()) == ["last.ckpt.safetensors", "selected.safetensors"]
    # A logger choice is not a result: a finished run is resumed with another one.
    assert main(["train", "--preset", "fashion-mnist-honest-small", "--out", str(run), *TINY, "--resume",
                 "--set", "train.logger=csv", "--set", "train.log_every_n_steps=3"]) == 0
