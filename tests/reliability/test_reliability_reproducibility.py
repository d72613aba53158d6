"""Reproducibility: a run records what it needs to be repeated, and repeating it
(same config and seed, CPU) gives identical metrics and weights."""

from __future__ import annotations

import json
import platform

import lightning
import pytest
import torch
from reliability_helpers import assert_same_weights, metrics, weights

import vicious
from vicious.cli import main
from vicious.config.presets import get_preset
from vicious.config.schema import apply_overrides, load_config

OVERRIDES = {"data.train_limit": 100, "data.val_limit": 50, "data.test_limit": 50, "data.image_size": 16,
             "train.epochs": 1, "train.batch_size": 50, "train.progress": False, "train.accelerator": "cpu",
             "seed": 3}
TINY = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in OVERRIDES.items()]


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "first"
    assert main(["train", "--preset", "fashion-mnist-vicious-small", *_sets(TINY), "--out", str(out)]) == 0
    return out


def test_the_run_records_seed_versions_device_and_resolved_config(first):
    environment = json.loads((first / "environment.json").read_text())
    assert environment["seed"] == 3
    assert environment["python"] == platform.python_version()
    assert environment["torch"] == torch.__version__ and environment["lightning"] == lightning.__version__
    assert environment["vicious"] == vicious.__version__
    # train.accelerator=cpu: the record must not name a GPU even where one exists.
    assert environment["cuda"] is None and environment["device"]
    resolved = apply_overrides(get_preset("fashion-mnist-vicious-small"), OVERRIDES)
    assert load_config(first / "config.yaml") == resolved


def test_the_recorded_config_reproduces_the_run_exactly(first, tmp_path):
    # Everything needed is in config.yaml: training from it alone gives the same numbers.
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(again)]) == 0
    assert metrics(again) == metrics(first)
    assert_same_weights(weights(again), weights(first))
    # Nothing in metrics.json depends on time; training.json holds the timing.
    assert "seconds" not in json.dumps(metrics(first))


def test_another_seed_gives_other_numbers(first, tmp_path):
    # Guards the test above against comparing something the seed does not reach.
    other = tmp_path / "other"
    assert main(["train", "--config", str(first / "config.yaml"), "--set", "seed=4", "--out", str(other)]) == 0
    assert metrics(other)["mse"] != metrics(first)["mse"]
