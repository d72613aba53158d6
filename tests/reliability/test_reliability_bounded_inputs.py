"""Tiny hostile inputs stay tiny: YAML alias bombs, huge grids, odd values and damaged
files end in one line and exit status 2 (or work), quickly, and change nothing saved."""

from __future__ import annotations

import json
import math
import resource
import shutil
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vicious
from vicious.cli import main
from vicious.config.schema import RunConfig, apply_overrides, load_config, parse_override
from vicious.metrics import ImageStatistics

PRESET = "fashion-mnist-vicious-small"
# A 1 KB "billion laughs": nine levels of nine aliases expand to 9**9 (387 million) strings.
BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "preset: " + PRESET + "\n"


def _fails(argv, capsys, *fragments, within: float = 5.0) -> str:
    """``vicious ARGV`` exits 2 within ``within`` seconds with one line holding every fragment."""
    started = time.perf_counter()
    assert main(argv) == 2
    took = time.perf_counter() - started
    captured = capsys.readouterr()
    assert captured.err.startswith("vicious: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for fragment in fragments:
        assert fragment in captured.err, captured.err
    assert took < within, f"took {took:.2f} s"
    return captured.err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- YAML ------------------------------------------------------------------------------------


def test_the_bomb_is_small():
    assert len(BOMB.encode()) < 1024 and BOMB.count("*a") == 72


def test_an_alias_bomb_config_fails_fast(tmp_path, capsys, no_training):
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    _fails(["train", "--config", str(config), "--out", str(tmp_path / "run")], capsys,
           str(config), "anchors and aliases", within=1.0)
    assert not (tmp_path / "run").exists()


def test_an_alias_bomb_grid_fails_fast(tmp_path, capsys):
    grid = tmp_path / "bomb.yaml"
    grid.write_text(BOMB)
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys,
           str(grid), "anchors and aliases", within=1.0)
    assert not (tmp_path / "out").exists()


def test_an_alias_bomb_in_a_sweep_folder_is_named_and_left_alone(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"preset: {PRESET}\n")  # one cell, named after its preset
    cell = tmp_path / "out" / PRESET
    cell.mkdir(parents=True)
    (cell / "config.yaml").write_text(BOMB)
    before = _snapshot(tmp_path / "out")
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys,
           str(cell / "config.yaml"), "anchors and aliases", within=1.0)
    assert _snapshot(tmp_path / "out") == before


def test_an_alias_bomb_in_a_run_folder_is_refused_on_resume(tmp_path, capsys, no_training):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(BOMB)
    before = _snapshot(run)
    _fails(["train", "--out", str(run), "--resume"], capsys, str(run / "config.yaml"), "anchors and aliases",
           within=1.0)
    assert _snapshot(run) == before


def test_an_alias_bomb_beside_metrics_is_refused_by_table(tmp_path, capsys):
    run = tmp_path / "sweep" / "cell"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(_metrics()))
    (run / "config.yaml").write_text(BOMB)
    _fails(["table", str(tmp_path / "sweep")], capsys, str(run / "config.yaml"), "anchors and aliases", within=1.0)


def test_an_oversized_config_is_refused_unread(tmp_path, capsys, no_training):
    config = tmp_path / "big.yaml"
    config.write_text("# padding\n" * 200_000)  # 2 MB of comments
    _fails(["train", "--config", str(config), "--out", str(tmp_path / "run")], capsys, str(config), "larger than")


def test_a_deeply_nested_config_is_refused(tmp_path, capsys, no_training):
    config = tmp_path / "deep.yaml"
    config.write_text("seed: " + "[" * 50_000 + "]" * 50_000 + "\n")
    _fails(["train", "--config", str(config), "--out", str(tmp_path / "run")], capsys, str(config), "nesting")


def test_a_config_key_that_is_not_a_name(tmp_path, capsys, no_training):
    config = tmp_path / "config.yaml"
    config.write_text(f"version: {vicious.__version__}\n1: 2\nseed: 3\n")
    _fails(["train", "--config", str(config), "--out", str(tmp_path / "run")], capsys, "config key 1 ")
    assert not (tmp_path / "run").exists()


# --- numbers in the usual notation -----------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("train.lr=1e-4", 0.0001), ("train.lr=1E-4", 0.0001), ("train.lr=2.5e3", 2500.0), ("x=-3e-2", -0.03),
    ("x=.5", 0.5), ("x=5", 5), ("x=1_000", 1000), ("x=true", True), ("x=fashion-mnist", "fashion-mnist"),
])
def test_override_values_in_every_usual_notation(text, expected):
    key, value = parse_override(text)
    assert key == text.split("=")[0]
    assert value == expected and type(value) is type(expected)


def test_set_lr_1e_minus_4_is_that_float():
    config = apply_overrides(RunConfig(), ["train.lr=1e-4", "loss.beta_r=1e1"])
    assert config.train.lr == 0.0001 and config.loss.beta_r == 10.0


def test_a_config_file_with_1e_minus_4_reads_it_as_a_float(tmp_path):
    (tmp_path / "config.yaml").write_text("train:\n  lr: 1e-4\nloss:\n  beta_r: 2E+0\n")
    config = load_config(tmp_path / "config.yaml", check_version=False)
    assert config.train.lr == 0.0001 and config.loss.beta_r == 2.0


def test_an_oversized_seed_is_refused_before_anything_is_written(tmp_path, capsys, no_training):
    run = tmp_path / "run"
    _fails(["train", "--preset", PRESET, "--set", f"seed={2**32}", "--out", str(run)], capsys,
           "seed", str(2**32 - 1), f"(got {2**32})")
    assert not (run / "config.yaml").exists()
    assert apply_overrides(RunConfig(), [f"seed={2**32 - 1}"]).seed == 4294967295  # the largest is accepted


# --- grids -------------------------------------------------------------------------------------


def test_a_huge_grid_is_counted_not_expanded(tmp_path, capsys):
    grid = tmp_path / "huge.yaml"
    grid.write_text(f"name: huge\npreset: {PRESET}\nvary:\n  seed: {{range: [1, 1000000000]}}\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys,
           f"{10**9 - 1:,} cells", "10,000", "split it", within=1.0)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing was built
    assert not (tmp_path / "out").exists()


def test_a_grid_crossing_axes_is_counted_by_their_product(tmp_path, capsys):
    grid = tmp_path / "wide.yaml"
    grid.write_text(f"preset: {PRESET}\nvary:\n  seed: {{range: [0, 200]}}\n"
                    "  train.lr: {linspace: [0.001, 0.01, 60]}\n")
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys, "12,000 cells", within=1.0)


@pytest.mark.parametrize("axis,fragment", [
    ("{range: [1, .inf]}", "finite numbers"),
    ("{range: [.nan]}", "finite numbers"),
    ("{range: [0, 10, -.inf]}", "finite numbers"),
    ("{linspace: [0, .inf, 3]}", "finite numbers"),
    ("{linspace: [.nan, 1, 3]}", "finite numbers"),
    ("{range: [0, 1e300, 1e-300]}", "cells"),  # finite, but far too many values
    ("{linspace: [0, 1, 2.5]}", "num a positive integer"),
])
def test_non_finite_or_endless_ranges_get_one_line(tmp_path, capsys, axis, fragment):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"preset: {PRESET}\nvary:\n  seed: {axis}\n")
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys, "seed", fragment, within=1.0)


def test_a_preset_format_spec_cannot_build_a_huge_name(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("preset: fashion-mnist-{regime:>999999999}-small\nvary:\n  regime: [honest]\n")
    _fails(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"], capsys, "format specs", within=1.0)


# --- vicious table -----------------------------------------------------------------------------


def _metrics(**changes) -> dict:
    metrics = {"regime": "vicious", "dataset": "fashion-mnist", "output": "raw", "seed": 1, "num_outputs": 10,
               "accuracy": 0.9, "mse": 0.02, "psnr": 16.99, "ssim": 0.5,
               "risk": {"exact": {"mean": 1.0}, "principal": {"mean": 1.5, "frac_above_one": 0.5}}}
    metrics.update(changes)
    return metrics


def test_a_nan_metric_shows_as_missing_with_a_note(tmp_path, capsys):
    for name, ssim in (("diverged", float("nan")), ("fine", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(_metrics(ssim=ssim, seed=len(name))))
    assert main(["table", str(tmp_path), "--section", "runs"]) == 0
    out = capsys.readouterr().out
    diverged = next(line for line in out.splitlines() if line.startswith("| diverged "))
    assert diverged.split(" | ")[9] == "–"  # the SSIM column
    assert "nan" not in diverged.lower()
    assert "diverged (ssim)" in out and "NaN or infinite" in out


@pytest.mark.parametrize("changes,fragment", [
    ({"ssim": "high"}, "'ssim' must be a number, got 'high'"),
    ({"mse": [0.1]}, "'mse' must be a number"),
    ({"risk": [1]}, "'risk' must be a mapping"),
    ({"seed": 1.5}, "'seed' must be an integer"),
    ({"regime": None}, "'regime' must be text"),
])
def test_a_corrupt_metrics_file_is_named(tmp_path, capsys, changes, fragment):
    (tmp_path / "cell").mkdir()
    path = tmp_path / "cell" / "metrics.json"
    path.write_text(json.dumps(_metrics(**changes)))
    before = path.read_bytes()
    _fails(["table", str(tmp_path)], capsys, str(path), fragment, "vicious evaluate")
    assert path.read_bytes() == before


# --- ImageStatistics ---------------------------------------------------------------------------


def test_statistics_of_512x512_images_are_refused_before_allocating():
    images = torch.rand(4, 1, 512, 512)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"1x512x512 images \(D = 262,144 pixels\).*TiB.*smaller images") as err:
        ImageStatistics.fit(images)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    # 3.5 float64 D x D matrices at the peak: 3.5 * 8 * 262144**2 bytes = 1.92 TB.
    assert "1.8 TiB" in str(err.value) and "\n" not in str(err.value)


def test_statistics_refuse_what_the_given_memory_cannot_hold():
    with pytest.raises(ValueError, match="memory_limit"):
        ImageStatistics.fit(torch.rand(4, 1, 32, 32), memory_limit=10**6)  # D = 1024 needs 29 MB
    stats = ImageStatistics.fit(torch.rand(4, 1, 8, 8), memory_limit=int(3.5 * 8 * 64**2))  # exactly enough
    assert stats.num_features == 64


@pytest.mark.parametrize("images", [torch.full((6, 1, 8, 8), 0.3), torch.full((6, 3, 8, 8), 200, dtype=torch.uint8),
                                    torch.full((1000, 1, 4, 4), 1 / 3, dtype=torch.float64)])
def test_statistics_of_constant_images_are_refused(images):
    with pytest.raises(ValueError, match="do not vary") as err:
        ImageStatistics.fit(images)
    assert "\n" not in str(err.value)


# --- weights -----------------------------------------------------------------------------------


def _copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_weights_relabelled_as_another_dtype_are_refused(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    path = copy / "classifier.safetensors"
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    before_header = json.loads(data[8:8 + size])
    # Same width and header length: the tensor bytes are unchanged, only their meaning.
    data[8:8 + size] = bytes(data[8:8 + size]).replace(b'"dtype":"F32"', b'"dtype":"I32"', 1)
    after_header = json.loads(data[8:8 + size])
    name, = (k for k in after_header if after_header[k] != before_header[k])
    path.write_bytes(bytes(data))
    before = _snapshot(copy)
    _fails(["evaluate", str(copy)], capsys, str(path), name, "torch.int32", "torch.float32", within=60)
    assert _snapshot(copy) == before


def test_nan_weights_are_blamed_on_the_weights_file(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    path = copy / "decoder.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name][0] = math.nan
    save_file(tensors, str(path), metadata=metadata)
    before = _snapshot(copy)
    err = _fails(["evaluate", str(copy)], capsys, str(path), name, "NaN or infinite", within=60)
    assert "logits" not in err
    assert _snapshot(copy) == before


@pytest.mark.parametrize("bounds,count", [
    ((0, 10, 3), 4), ((10, 0, -3), 4), ((0, 10, -1), 0), ((5, 5, 1), 0), ((0, 10**100, 1), 10**100),
    ((0, 1, 0.1), 10), ((0.0, 1e300, 1e-300), math.inf),
])
def test_range_lengths_are_arithmetic(bounds, count):
    from vicious.studies.sweep import range_length

    assert range_length(*bounds) == count


def test_a_saved_string_that_looks_like_a_float_reads_back_as_text(tmp_path):
    from vicious.config.schema import save_config

    config = apply_overrides(RunConfig(), {"data.root": "1e5"})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").data.root == "1e5"
