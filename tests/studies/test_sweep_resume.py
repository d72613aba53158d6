"""Kill a sweep (SIGKILL) once a cell has finished; the rerun runs only the cells that had not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from sweep_helpers import write_grid

from vicious.studies.sweep import expand_grid, load_grid, read_status


def test_killed_sweep_reruns_only_the_missing_cells(tmp_path):
    grid_file = write_grid(tmp_path / "grid.yaml", preset="fashion-mnist-vicious-small", vary={"seed": [1, 2, 3, 4]})
    names = [c.name for c in expand_grid(load_grid(grid_file))]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vicious.cli", "sweep", str(grid_file), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (out / names[0] / "metrics.json").exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the first cell did not finish in 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

    finished = [n for n in names if (out / n / "metrics.json").exists()]
    missing = [n for n in names if n not in finished]
    assert finished and missing, "the kill came too late to leave unfinished cells"
    before = {n: (out / n / "status.json").read_text() for n in finished}
    assert not (out / "sweep.json").exists()  # the killed sweep never got to its summary

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} finished (skipped), {len(missing)} to run" in rerun.stdout
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["skipped"] == finished and sorted(summary["ran"]) == sorted(missing)
    assert all(state == "done" for state in summary["ran"].values())
    for name in finished:  # untouched: not retrained, not re-evaluated
        assert (out / name / "status.json").read_text() == before[name]
    for name in missing:
        status = read_status(out / name)
        assert status["state"] == "done" and (out / name / "metrics.json").exists()
        # A cell the kill interrupted was started twice; one never started, once.
        assert status["attempt"] in (1, 2)
    started = [read_status(out / n)["attempt"] for n in missing]
    assert started.count(2) <= 1  # only the cell running at the kill had been started before
