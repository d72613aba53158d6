"""A config, checkpoint or weights file from another version, another dataset or
another config is refused, and the message names the difference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from reliability_helpers import ONE_EPOCH
from safetensors.torch import load_file, save_file

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
    shutil.copy(run / "checkpoints/joint/last.ckpt.safetensors", run / "checkpoints/joint/best.ckpt.safetensors")


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
    last = copy / "checkpoints" / "joint" / "last.ckpt.safetensors"
    from safetensors import safe_open

    with safe_open(last, "pt") as f:
        metadata = f.metadata()
    assert metadata["vicious_version"] == vicious.__version__
    save_file(load_file(last), last, metadata={**metadata, "vicious_version": "0.0.7"})
    assert main(["train", "--out", str(copy), "--resume", "--no-evaluate"]) == 2
    err = _error(capsys)
    assert "last.ckpt.safetensors was written by vicious 0.0.7" in err and f"this is vicious {vicious.__version__}" in err


def test_a_run_with_the_older_checkpoint_names_resumes(copy):
    """Runs of earlier commits named their checkpoints ``last.ckpt`` and ``best.ckpt``, and
    their callback state names those files: such a run still resumes."""
    from vicious.runs.checkpoints import load_state, save_state

    _interrupted(copy)
    folder = copy / "checkpoints" / "joint"
    state = load_state(folder / "last.ckpt.safetensors")

    def older(value):  # every path in the callbacks' state, under the older suffix
        if isinstance(value, dict):
            return {older(k): older(v) for k, v in value.items()}
        return value.replace(".ckpt.safetensors", ".ckpt") if isinstance(value, str) else value

    callbacks = older(state["callbacks"])
    assert any(str(v).endswith("/best.ckpt") for c in callbacks.values() for v in c.values())
    save_state({**state, "callbacks": callbacks}, folder / "last.ckpt")
    (folder / "best.ckpt.safetensors").rename(folder / "best.ckpt")
    (folder / "last.ckpt.safetensors").unlink()
    assert main(["train", "--out", str(copy), "--resume", "--no-evaluate"]) == 0
    assert (copy / "classifier.safetensors").is_file() and not (folder / "best.ckpt").exists()


def test_weights_of_another_dataset_are_refused_naming_it(copy, capsys):
    # Same shapes (MNIST and Fashion-MNIST are both 1×32×32 with 10 classes):
    # only the recorded dataset tells them apart.
    path = copy / "classifier.safetensors"
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    assert metadata == {"dataset": "fashion-mnist", "num_outputs": "10", "channels": "1", "image_size": "32",
                        "classifier": "wrn", "decoder": "wrn", "depth": "10", "width": "1", "output": "raw", "decoder_input_norm": "true"}
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
