"""The ray executor on a local Ray instance (started and shut down by the sweep)."""

from __future__ import annotations

import json
import os

import pytest
from sweep_helpers import write_grid

from vicious.cli import main
from vicious.studies.sweep import read_status

ray = pytest.importorskip("ray", reason="the ray executor needs Ray (pip install 'vicious-classifiers[ray]')")


@pytest.fixture(autouse=True)
def no_ray_left_running():
    yield
    if ray.is_initialized():  # only if a test failed half-way
        ray.shutdown()


def test_ray_sweep_runs_cells_as_tasks_and_shuts_ray_down(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", vary={"regime": ["honest", "vicious"]},
                      resources={"num_cpus": 1, "num_gpus": 0})
    out = tmp_path / "out"
    assert main(["sweep", str(grid), "--out", str(out), "--executor", "ray"]) == 0
    printed = capsys.readouterr().out
    assert "local Ray with" in printed and "each cell asks for 1 CPU, 0 GPU" in printed
    assert not ray.is_initialized()
    summary = json.loads((out / "sweep.json").read_text())
    assert sorted(summary["ran"].values()) == ["done", "done"]
    pids = {read_status(out / name)["pid"] for name in summary["ran"]}
    assert len(pids) >= 1 and all(pid != os.getpid() for pid in pids)  # ran in Ray workers
    for name in summary["ran"]:
        assert (out / name / "metrics.json").is_file()
    # A rerun finds everything finished and starts no Ray at all.
    assert main(["sweep", str(grid), "--out", str(out), "--executor", "ray"]) == 0
    assert "2 finished (skipped), 0 to run" in capsys.readouterr().out


def test_ray_refuses_requests_the_cluster_cannot_meet(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray", "--num-gpus", "1"]) == 2
    assert "asks for 1 GPU but the Ray cluster has 0" in capsys.readouterr().err
    assert not ray.is_initialized()
