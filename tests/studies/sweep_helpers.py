"""Helpers for the sweep, table and report tests: tiny grids, synthetic run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from vicious.config.presets import get_preset

# A cell of about 2 s: WRN-10-1, 300 training images, one epoch.
TINY_SET = {
    "model.depth": 10, "model.width": 1, "data.train_limit": 300, "data.val_limit": 100,
    "data.test_limit": 100, "data.augment": False, "train.epochs": 1, "train.batch_size": 100,
    "train.accelerator": "cpu",
}


def write_grid(path: Path, **grid) -> Path:
    """A grid file with TINY_SET under ``set`` (extended by ``grid['set']``)."""
    values = {"name": path.stem, "preset": "fashion-mnist-{regime}-small", **grid,
              "set": {**TINY_SET, **grid.get("set", {})}}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def fake_run(folder: Path, name: str, *, regime: str, seed: int, accuracy: float, mse: float, ssim: float,
             r_exact: float, r_principal: float, dataset: str = "fashion-mnist", k: int = 10,
             output: str = "raw", overrides: dict | None = None, top1: float = 0.1) -> Path:
    """A run directory holding only what the tables read: metrics.json and config.yaml."""
    run = folder / name
    run.mkdir(parents=True)
    preset = f"{'celeba-k' + str(k) if dataset == 'celeba' else dataset}-{regime}-small"
    config = get_preset(preset).model_dump()
    config.update(seed=seed, output=output)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        config[section][key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "regime": regime, "dataset": dataset, "output": output, "seed": seed, "num_outputs": k,
        "num_test_images": 100, "accuracy": accuracy, "mse": mse, "psnr": -10 * math.log10(mse),
        "ssim": ssim,
        "risk": {"exact": {"mean": r_exact, "median": r_exact, "frac_above_one": 0.5},
                 "principal": {"mean": r_principal, "median": r_principal, "frac_above_one": 0.25}},
        "reidentification": {"pixel": {"top1": top1, "top5": 2 * top1}, "principal": {"top1": top1, "top5": 3 * top1}},
        "confidence_intervals": {"accuracy": [accuracy - 0.01, accuracy + 0.02], "mse": [mse * 0.9, mse * 1.1],
                                 "ssim": [ssim - 0.01, ssim + 0.01], "risk_exact": [r_exact - 0.1, r_exact + 0.1],
                                 "risk_principal": [r_principal - 0.1, r_principal + 0.1]},
    }
    # The label-only floor: twice the MSE (3.01 dB below), half the SSIM.
    metrics["label_only"] = {"mse": 2 * mse, "psnr": -10 * math.log10(2 * mse), "ssim": ssim / 2,
                             "risk": {"exact": {"mean": 1.0}, "principal": {"mean": 1.05, "frac_above_one": 0.8}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run
