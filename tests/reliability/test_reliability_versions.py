"""A config, checkpoint or weights file from another version, another dataset or
another config is refused, and the message names the difference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from reliability_helpers import ONE_EPOCH

import vicious
from vicious.cli import main
from vicious.data.mnist import DEBIAN_FASHION_MNIST, EMBEDDED_DIR
from vicious.models import create_model

TRAIN = ["train", "--preset", "fashion-mnist-vicious-small"]


@pytest.fixture
def copy(run, tmp_path):
    """A private copy of the finished run, to tamper with."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("vicious: error: ") and err.count("\n") == 1, err
    return err


def _interrupted(run):
    """Make a finished run look killed during its only phase: no selected weights, and the
    best.ckpt a phase keeps while it trains (a finished phase drops it). With one epoch the
    best epoch is the last, so best.ckpt is last.ckpt."""
    for name in ("classifier.safetensors", "decoder.safetensors", "checkpoints/joint/selected.safetensors"):
        (run / name).unlink()
    shutil.copy(run / "checkpoints/joint/last.ckpt", run / "checkpoints/joint/best.ckpt")


def test_a_config_from_another_version_is_refused_naming_both(copy, capsys):
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["version"] = "9.9.0"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    for argv in (["evaluate", str(copy)], ["train", "--out", str(copy), "--resume"]):
        assert main(argv) == 2
        err = _error(capsys)
        assert "written by vicious 9.9.0" in err and f"this is {vicious.__version__}" in err


def test_a_checkpoint_from_another_version_is_refused_naming_both(copy, capsys):
    _interrupted(copy)
    last = copy / "checkpoints" / "joint" / "last.ckpt"
    from safetensors import safe_open

    with safe_open(last, "pt") as f:
        metadata = f.metadata()
    assert metadata["vicious_version"] == vicious.__version__
    save_file(load_file(last), last, metadata={**metadata, "vicious_version": "0.0.7"})
    assert main(["train", "--out", str(copy), "--resume", "--no-evaluate"]) == 2
    err = _error(capsys)
    assert "last.ckpt was written by vicious 0.0.7" in err and f"this is vicious {vicious.__version__}" in err


def test_weights_of_another_dataset_are_refused_naming_it(copy, capsys):
    # Same shapes (MNIST and Fashion-MNIST are both 1×32×32 with 10 classes):
    # only the recorded dataset tells them apart.
    path = copy / "classifier.safetensors"
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    assert metadata == {"dataset": "fashion-mnist", "num_outputs": "10", "channels": "1", "image_size": "32",
                        "classifier": "wrn", "depth": "10", "width": "1", "output": "raw", "decoder_input_norm": "true"}
    save_file(load_file(path), path, metadata={**metadata, "dataset": "mnist"})
    assert main(["evaluate", str(copy)]) == 2
    err = _error(capsys)
    assert "classifier.safetensors was trained for dataset 'mnist' (expected 'fashion-mnist')" in err


def test_weights_for_another_number_of_classes_are_refused_naming_it(copy, capsys):
    # A CIFAR-100-sized decoder (K = 100) dropped into a Fashion-MNIST run (K = 10).
    decoder = create_model("wrn-decoder", depth=10, width=1, out_channels=3, num_inputs=100)
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, copy / "decoder.safetensors",
              metadata={"dataset": "cifar100", "num_outputs": "100", "channels": "3", "image_size": "32"})
    assert main(["evaluate", str(copy)]) == 2
    err = _error(capsys)
    assert "dataset 'cifar100' (expected 'fashion-mnist'), num_outputs '100' (expected '10')" in err
    assert "channels '3' (expected '1')" in err


def test_resume_with_another_config_names_the_differences(copy, capsys):
    _interrupted(copy)
    argv = [*TRAIN, *ONE_EPOCH, "--set", "train.lr=0.01", "--set", "seed=7", "--out", str(copy), "--resume"]
    assert main(argv) == 2
    err = _error(capsys)
    assert "--resume with a different config" in err
    assert "seed: saved 1, given 7" in err and "train.lr: saved 0.015, given 0.01" in err
    # Where the data lives and the progress display may change between sessions.
    same_data = DEBIAN_FASHION_MNIST if DEBIAN_FASHION_MNIST.is_dir() else EMBEDDED_DIR  # where the run found it
    assert main([*TRAIN, *ONE_EPOCH, "--set", "train.progress=true", "--data-root", str(same_data),
                 "--out", str(copy), "--resume", "--no-evaluate"]) == 0
    assert (copy / "classifier.safetensors").exists()
    assert json.loads((copy / "training.json").read_text())["phases"]["joint"]["epochs"] == 1


def test_resume_on_other_data_is_refused_naming_the_split(tmp_path, capsys, monkeypatch):
    # Resuming on another machine, or with another --data-root, may find other files
    # (e.g. the embedded subset instead of the full set): the run would silently go on
    # with other images. Here the "other files" have train and test swapped.
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    original, other = tmp_path / "original", tmp_path / "other"
    shutil.copytree(EMBEDDED_DIR, original)
    other.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copy(EMBEDDED_DIR / f"train-{kind}-ubyte.gz", other / f"t10k-{kind}-ubyte.gz")
        shutil.copy(EMBEDDED_DIR / f"t10k-{kind}-ubyte.gz", other / f"train-{kind}-ubyte.gz")
    run = tmp_path / "run"
    assert main([*TRAIN, *ONE_EPOCH, "--data-root", str(original), "--out", str(run), "--no-evaluate"]) == 0
    record = json.loads((run / "data.json").read_text())
    assert record["source"] == f"root:{original}" and record["train"]["images"] == 50
    _interrupted(run)
    assert main(["train", "--out", str(run), "--resume", "--data-root", str(other)]) == 2
    err = _error(capsys)
    assert f"the data found now (root:{other}) are not those this run started with (root:{original})" in err
    assert "other images in train (50 images now, 50 before), val" in err and "--data-root" in err
    # The original files again: resumes.
    assert main(["train", "--out", str(run), "--resume", "--data-root", str(original), "--no-evaluate"]) == 0
