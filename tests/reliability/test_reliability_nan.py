"""A NaN or Inf loss stops training with a one-line message and keeps the last good
checkpoint; NaN and Inf config values are refused before anything runs."""

from __future__ import annotations

import math

import pytest
import torch

from vicious.attack import lightning_module
from vicious.cli import main
from vicious.config.presets import get_preset
from vicious.config.schema import ConfigError, apply_overrides
from vicious.runs import training
from vicious.runs.checkpoints import load_state

# 100 images in batches of 50, no augmentation: 2 training batches per epoch. A constant
# learning rate, so that the 1-epoch reference run's first epoch is the 2-epoch run's.
TINY = ["--set", "train.schedule=constant","--set", "data.train_limit=100", "--set", "data.val_limit=50", "--set", "data.test_limit=50",
        "--set", "train.epochs=2", "--set", "train.batch_size=50", "--set", "train.progress=false",
        "--set", "data.augment=false", "--set", "train.accelerator=cpu"]
BATCHES_PER_EPOCH = 2


def _nan_from_call(monkeypatch, first_bad_call: int):
    """Make the reconstruction loss NaN from its ``first_bad_call``-th call (0-based) on."""
    original, calls = lightning_module.reconstruction_loss, []

    def poisoned(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls.append(1)
        return loss * math.nan if len(calls) > first_bad_call else loss

    monkeypatch.setattr(lightning_module, "reconstruction_loss", poisoned)


def _train(out, *extra) -> int:
    return main(["train", "--preset", "fashion-mnist-vicious-small", *TINY, *extra, "--out", str(out), "--no-evaluate"])


@pytest.fixture(scope="module")
def epoch_zero_state(tmp_path_factory):
    """The training state after epoch 0 of a healthy run: an independent reference."""
    out = tmp_path_factory.mktemp("healthy") / "run"
    assert _train(out, "--set", "train.epochs=1") == 0
    return load_state(out / "checkpoints" / "joint" / "last.ckpt.safetensors")


def _assert_last_good_checkpoint(run, epoch_zero_state):
    last = load_state(run / "checkpoints" / "joint" / "last.ckpt.safetensors")
    assert last["epoch"] == 0
    for name, tensor in epoch_zero_state["state_dict"].items():
        assert torch.equal(last["state_dict"][name], tensor), name
        assert bool(torch.isfinite(last["state_dict"][name].float()).all())
    # A diverged run is never presented as finished.
    assert not (run / "classifier.safetensors").exists() and not (run / "decoder.safetensors").exists()


@pytest.mark.parametrize("check_every", [1, 1000], ids=["checked-every-batch", "checked-before-validation"])
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys, epoch_zero_state, check_every
):
    # NaN from epoch 1, batch 1 on. With check_every=1000 (as on an accelerator, where
    # reading the loss waits for the device) the batch itself is not checked; the
    # record must still stop training before epoch 1's checkpoint is written.
    _nan_from_call(monkeypatch, BATCHES_PER_EPOCH + 1)

    class SparselyChecked(training.AttackModule):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "nan_check_every": check_every})

    monkeypatch.setattr(training, "AttackModule", SparselyChecked)
    run = tmp_path / "run"
    assert _train(run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vicious: error: loss became nan at epoch 1, batch 1;")
    assert "lower train.lr" in err
    _assert_last_good_checkpoint(run, epoch_zero_state)
    assert main(["evaluate", str(run)]) == 2
    assert "training did not finish" in capsys.readouterr().err


def test_an_infinite_loss_is_caught_too(tmp_path, monkeypatch, capsys):
    original = lightning_module.reconstruction_loss
    monkeypatch.setattr(lightning_module, "reconstruction_loss", lambda *a, **k: original(*a, **k) * math.inf)
    assert _train(tmp_path / "run") == 1
    assert "loss became inf at epoch 0, batch 0" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["loss.beta_c", "loss.beta_r", "loss.alpha_huber", "loss.alpha_ssim",
                                 "loss.huber_delta", "loss.beta_ent", "train.lr",
                                 "train.max_minutes", "evaluation.variance_fraction"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_config_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(get_preset("fashion-mnist-vicious-small"), [f"{key}={value}"])


def test_a_nan_config_value_through_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "load_splits", lambda config: pytest.fail("data loaded despite a bad config"))
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--set", "loss.beta_r=.nan",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vicious: error: loss.beta_r:") and "nan" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
