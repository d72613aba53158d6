"""Fixtures for the sweep, table and report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import write_grid

from vicious.studies.sweep import load_grid, run_sweep


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """A finished sweep: honest and vicious, raw outputs, seeds 1 and 2 (4 cells, ~15 s)."""
    from vicious.studies.executors import LocalExecutor

    folder = tmp_path_factory.mktemp("tiny-sweep")
    grid = write_grid(folder / "tiny.yaml", vary={"regime": ["honest", "vicious"], "seed": [1, 2]})
    summary = run_sweep(load_grid(grid), folder / "out", LocalExecutor(), echo=lambda line: None)
    assert not summary["failed"], summary
    return folder / "out"
