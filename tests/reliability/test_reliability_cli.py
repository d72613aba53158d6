"""Typing mistakes and missing or damaged files: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import shutil

import pytest
import torch

import vicious
from vicious.cli import main
from vicious.data.mnist import EMBEDDED_DIR

TRAIN = ["train", "--preset", "fashion-mnist-vicious-small", "--set", "train.progress=false"]


def _fails(argv, capsys, *fragments, status=2) -> str:
    assert main(argv) == status
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("vicious: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + captured.out
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("argv,fragments", [
    ([*TRAIN, "--set", "train.epochs"], ["'train.epochs' is not of the form key=value"]),
    ([*TRAIN, "--set", "train.lr=5"], ["train.lr: Input should be less than or equal to 1", "(got 5)"]),
    ([*TRAIN, "--set", "train.batch_size=0"], ["train.batch_size: Input should be greater than or equal to 1"]),
    ([*TRAIN, "--set", "model.depth=12"], ["depth must be 6n + 4", "got 12"]),
    ([*TRAIN, "--set", "train=3"], ["'train' is a section"]),
    ([*TRAIN, "--set", "regime=evil"], ["regime: Input should be 'honest', 'vicious' or 'autoencoder'"]),
    ([*TRAIN, "--set", "loss.bet_r=1"], ["unknown config key 'loss.bet_r'", "did you mean 'loss.beta_r'"]),
    ([*TRAIN, "--config", "x.yaml"], ["config file not found: x.yaml"]),  # --preset and --config combine
    (["train", "--config", "/no/such/config.yaml"], ["config file not found: /no/such/config.yaml"]),
])
def test_typing_mistakes(tmp_path, capsys, no_training, argv, fragments):
    _fails([*argv, "--out", str(tmp_path / "run")], capsys, *fragments)


def test_a_config_file_that_is_not_yaml(tmp_path, capsys, no_training):
    bad = tmp_path / "config.yaml"
    bad.write_text("train: {epochs: [1,\n")
    _fails(["train", "--config", str(bad), "--out", str(tmp_path / "run")], capsys, f"{bad} is not valid YAML")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_that_is_not_there(tmp_path, capsys, no_training):
    _fails([*TRAIN, "--set", "train.accelerator=gpu", "--out", str(tmp_path / "run")], capsys,
           "train.accelerator=gpu, but this machine has no such device", "use train.accelerator=auto")


def test_missing_dataset_files_are_named_with_the_fix(tmp_path, capsys, cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails([*TRAIN, "--data-root", str(empty), "--out", str(tmp_path / "run")], capsys,
           "train-images-idx3-ubyte", str(empty), "pass --download")


def test_a_corrupt_dataset_file_is_named_with_the_fix(tmp_path, capsys, cache):
    data = tmp_path / "data"
    shutil.copytree(EMBEDDED_DIR, data)
    damaged = data / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:5000])  # a download cut short
    _fails([*TRAIN, "--data-root", str(data), "--out", str(tmp_path / "run")], capsys,
           f"{damaged} is corrupt", "replace it with a good copy")


def test_evaluating_an_unfinished_run_says_how_to_finish_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"version: {vicious.__version__}\n")
    _fails(["evaluate", str(run)], capsys, "training did not finish", "--resume")
