"""Fixtures shared by the reliability tests."""

from __future__ import annotations

import pytest
from reliability_helpers import ONE_EPOCH

from vicious.cli import main
from vicious.runs import training


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A finished tiny vicious run, trained once; tests copy what they tamper with."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--preset", "fashion-mnist-vicious-small", *ONE_EPOCH, "--out", str(out), "--no-evaluate"]) == 0
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command gets as far as loading data."""
    monkeypatch.setattr(training, "load_splits", lambda config: pytest.fail("data was loaded"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty vicious cache for this test."""
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
