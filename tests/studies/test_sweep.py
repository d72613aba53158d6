"""Grid files: axes, cell names, the shipped grids, and a sweep that records failures and skips finished cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sweep_helpers import TINY_SET, write_grid

from vicious.cli import main
from vicious.config.schema import ConfigError
from vicious.studies.executors import LocalExecutor
from vicious.studies.sweep import (
    MAX_NAME,
    Grid,
    axis_values,
    cell_name,
    expand_grid,
    load_grid,
    read_status,
    run_sweep,
)

GRIDS = Path(__file__).resolve().parents[2] / "grids"


@pytest.mark.parametrize("spec,expected", [
    ([1, 2, 5], [1, 2, 5]),
    ("raw", ["raw"]),
    ({"range": [4]}, [0, 1, 2, 3]),
    ({"range": [1, 4]}, [1, 2, 3]),
    ({"range": [10, 0, -4]}, [10, 6, 2]),
    ({"range": [0.5, 1.0, 0.25]}, [0.5, 0.75]),
    ({"linspace": [0, 1, 5]}, [0, 0.25, 0.5, 0.75, 1.0]),
    ({"linspace": [3, 9, 1]}, [3]),
])
def test_axis_values(spec, expected):
    assert axis_values("x", spec) == pytest.approx(expected)


@pytest.mark.parametrize("spec,message", [
    ([], "empty list"),
    ({"range": [3, 1]}, "is empty"),
    ({"range": [1, 5, 0]}, "step != 0"),
    ({"linspace": [0, 1]}, "linspace takes"),
    ({"steps": [1, 2]}, "a mapping must be"),
    ({"range": ["a"]}, "list of numbers"),
])
def test_axis_errors_name_the_axis(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        axis_values("loss.beta_r", spec)
    assert "loss.beta_r" in str(err.value)


def test_expansion_crosses_axes_and_names_cells_by_their_settings():
    grid = Grid.model_validate({
        "preset": "fashion-mnist-{regime}-small", "set": {"train.epochs": 2},
        "vary": {"regime": ["honest", "vicious"], "seed": {"range": [1, 4]}, "loss.beta_r": [1.5, 3]},
    })
    cells = expand_grid(grid, ["data.train_limit=123"])
    assert len(cells) == 2 * 3 * 2
    names = [c.name for c in cells]
    assert len(set(names)) == len(names)
    assert names[0] == "fashion-mnist-honest-small__loss.beta_r=1.5__seed=1"  # config keys sorted
    for cell in cells:
        c = cell.config
        assert c.preset == cell.preset == f"fashion-mnist-{c.regime}-small"
        assert (c.seed, c.loss.beta_r) == (cell.axes["seed"], cell.axes["loss.beta_r"])
        assert c.train.epochs == 2 and c.data.train_limit == 123 and c.train.progress is False
    # Expanding again gives the same cells in the same order: names are deterministic.
    assert [c.name for c in expand_grid(grid, ["data.train_limit=123"])] == names


def test_cell_names_are_safe_and_short():
    plain = cell_name("cifar10-vicious", {"seed": 2, "output": "softmax"})
    assert plain == "cifar10-vicious__output=softmax__seed=2"
    odd = cell_name("p", {"data.root": "/data/my sets", "data.attributes": ["Smiling", 8]})
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", odd) and "/" not in odd
    assert odd != cell_name("p", {"data.root": "/data/my:sets", "data.attributes": ["Smiling", 8]})
    long = cell_name("celeba-k40-vicious", {f"loss.key_{i}": i * 0.123456 for i in range(30)})
    assert len(long) <= MAX_NAME and long.startswith("celeba-k40-vicious__")
    assert long == cell_name("celeba-k40-vicious", {f"loss.key_{i}": i * 0.123456 for i in range(30)})


@pytest.mark.parametrize("grid,message", [
    ({"preset": "fashion-mnist-{regime}-small", "vary": {"seed": [1]}}, "has no such axis"),
    ({"preset": "fashion-mnist-vicious-small", "vary": {"train.epoch": [1]}}, "unknown config key 'train.epoch'"),
    ({"preset": "fashion-mnist-vicious-small", "vary": {"dataset": ["mnist"]}}, "must fill a {field}"),
    ({"preset": "fashion-mnist-vicious-small", "vary": {"train.epochs": [0]}}, "greater than or equal to 1"),
    ({"preset": "no-such-preset", "vary": {"seed": [1]}}, "unknown preset"),
    ({"preset": ["fashion-mnist-vicious-small", "fashion-mnist-vicious-small"]}, "twice"),
    ({"preset": "fashion-mnist-autoencoder-small", "set": {"loss.beta_c": 1.0}}, "beta_c=0"),
])
def test_bad_grids_fail_before_anything_runs(grid, message):
    with pytest.raises(ConfigError, match=message):
        expand_grid(Grid.model_validate(grid))


def test_load_grid_errors(tmp_path):
    with pytest.raises(ConfigError, match="grid file not found"):
        load_grid(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("preset: x\nvary: {}\nextra_key: 1\n")
    with pytest.raises(ConfigError, match="extra_key"):
        load_grid(tmp_path / "bad.yaml")


def test_shipped_grids():
    small = expand_grid(load_grid(GRIDS / "small.yaml"))
    assert len(small) == 3 * 2 * 2
    assert {(c.config.regime, c.config.output, c.config.seed) for c in small} == {
        (r, o, s) for r in ("honest", "vicious", "autoencoder") for o in ("raw", "softmax") for s in (1, 2)}
    assert all(c.config.data.name == "fashion-mnist" and c.config.model.depth == 10 for c in small)
    paper = {c.name: c for c in expand_grid(load_grid(GRIDS / "paper.yaml"))}
    assert len(paper) == 19 * 3 * 2 * 3
    attributes = {c.config.data.attributes for c in paper.values() if c.config.data.name == "celeba"}
    assert attributes == {f"k{k}" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 40)}
    # The GPU slice is made of paper cells, identical configs: a paper sweep into the same --out skips them.
    gpu_slice = expand_grid(load_grid(GRIDS / "paper-gpu-slice.yaml"))
    assert gpu_slice and all(paper[c.name].config == c.config for c in gpu_slice)
    assert all(c.config.model.depth == 28 and c.config.data.augment for c in gpu_slice)


def test_failed_cell_is_recorded_and_the_others_finish_then_rerun_skips_finished(tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small",
                                vary={"data.root": [None, str(tmp_path / "no-such-data")]}))
    out = tmp_path / "out"
    lines = []
    summary = run_sweep(grid, out, LocalExecutor(), echo=lines.append)
    good, bad = (c.name for c in expand_grid(grid))
    assert summary["ran"] == {good: "done", bad: "failed"} and summary["failed"] == [bad]
    status = read_status(out / bad)
    assert status["state"] == "failed" and "no-such-data" in status["error"]
    assert "Traceback" in status["traceback"] and status["attempt"] == 1
    assert read_status(out / good)["state"] == "done" and (out / good / "metrics.json").is_file()
    assert json.loads((out / "sweep.json").read_text())["failed"] == [bad]
    assert any(bad in line and "failed" in line for line in lines)

    finished_status = (out / good / "status.json").read_text()
    again = run_sweep(grid, out, LocalExecutor(), echo=lambda line: None)
    assert again["skipped"] == [good] and list(again["ran"]) == [bad]  # only the failed cell is retried
    assert (out / good / "status.json").read_text() == finished_status
    assert read_status(out / bad)["attempt"] == 2


def test_sweep_refuses_an_out_folder_trained_with_another_config(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small")
    out = tmp_path / "out"
    assert main(["sweep", str(grid), "--out", str(out)]) == 0
    assert "1 cells: 0 finished (skipped), 1 to run" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--out", str(out), "--dry-run"]) == 0
    assert "finished    fashion-mnist-vicious-small" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--out", str(out), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "other configs than the grid's" in err and "train.epochs: saved 1, grid 2" in err


def test_cli_reports_failed_cells_with_exit_status_2(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small",
                      set={"data.root": str(tmp_path / "missing")})
    assert main(["sweep", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 cells failed" in err and "status.json holds the error" in err


@pytest.mark.parametrize("argv,message", [
    (["--executor", "local", "--address", "auto"], "--address is for the ray executor"),
    (["--max-parallel", "0"], "at least 1"),
    (["--executor", "ray", "--num-gpus", "-1"], "--num-gpus must be 0 or more"),
])
def test_cli_flag_errors(tmp_path, capsys, argv, message):
    grid = write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_tiny_set_is_valid_for_every_regime():
    grid = Grid.model_validate({"preset": "fashion-mnist-{regime}-small", "set": TINY_SET,
                                "vary": {"regime": ["honest", "vicious", "autoencoder"]}})
    assert {c.config.regime for c in expand_grid(grid)} == {"honest", "vicious", "autoencoder"}
    assert yaml.safe_dump(grid.model_dump(by_alias=True))  # what run_sweep copies into the folder
