"""The local executor's process pool: cells run in fresh worker processes, results come back."""

from __future__ import annotations

import os

from sweep_helpers import write_grid

from vicious.studies.executors import LocalExecutor, available_cpus
from vicious.studies.sweep import load_grid, read_status, run_sweep


def test_pool_runs_cells_in_worker_processes(tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.yaml", vary={"regime": ["honest", "vicious"]}))
    executor = LocalExecutor(max_parallel=2)
    assert executor.threads == max(1, available_cpus() // 2)  # the cores are shared out, not oversubscribed
    summary = run_sweep(grid, tmp_path / "out", executor, echo=lambda line: None)
    assert sorted(summary["ran"].values()) == ["done", "done"]
    statuses = [read_status(tmp_path / "out" / name) for name in summary["ran"]]
    assert all(s["pid"] != os.getpid() and s["cpu_seconds"] > 0 for s in statuses)
    assert all((tmp_path / "out" / name / "per_sample.csv").is_file() for name in summary["ran"])
