"""The Python API: the whole loop of the command line, with images as floats in [0, 1].

    from vicious import api

    run = api.train("fashion-mnist-vicious-small", "runs/fm")   # train, then measure on the test split
    run = api.load("runs/fm")                                   # a finished run folder
    outputs, rebuilt = api.reconstruct(run, images)             # N×C×H×W floats in [0, 1]
    released = api.release(outputs, "top-1")                    # what a careful user would send
    audit = api.audit("model.onnx", "fashion-mnist", "audit-out")

Every function is the command of the same name (``vicious train``, ``evaluate``, ``audit``,
``calibrate``) without the command line: the same run folders, files and checks. Config
values are given as in ``--set``: ``set={"train.epochs": 3, "seed": 2}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from vicious.config.presets import get_preset
from vicious.config.schema import RunConfig, apply_overrides, load_config
from vicious.defences.calibration import REFERENCE_IMAGES
from vicious.defences.calibration import calibrate as calibrate_references
from vicious.defences.suite import SuiteSettings
from vicious.release.policies import ReleasePolicy, parse_policy
from vicious.runs.layout import TrainedRun, open_run

__all__ = ["SuiteSettings", "TrainedRun", "audit", "calibrate", "config", "evaluate", "load", "reconstruct",
           "release", "train"]


def config(preset: str | None = None, file: str | Path | None = None, set: Mapping[str, Any] | None = None) -> RunConfig:
    """A validated run config: ``preset`` (else the defaults), then the YAML ``file``, then ``set``,
    as ``vicious train --preset P --config FILE --set k=v`` builds it."""
    resolved = get_preset(preset) if preset else None
    if file is not None:
        resolved = load_config(Path(file), base=resolved)
    resolved = resolved or RunConfig()
    return apply_overrides(resolved, dict(set or {}))


def train(config_or_preset: RunConfig | str, out: str | Path, *, set: Mapping[str, Any] | None = None,
          resume: bool = False, evaluate: bool = True) -> TrainedRun:
    """Train a classifier/decoder pair into the run folder ``out`` (``resume``: continue an
    interrupted one), measure it on the test split unless ``evaluate=False``, and return it."""
    from vicious.runs.evaluation import evaluate_run
    from vicious.runs.training import train_run

    resolved = config(config_or_preset, set=set) if isinstance(config_or_preset, str) else \
        apply_overrides(config_or_preset, dict(set or {}))
    run_dir = train_run(resolved, Path(out), resume=resume)
    run = open_run(run_dir)
    if evaluate:
        evaluate_run(run)
    return run


def load(path: str | Path) -> TrainedRun:
    """A finished run folder: its config, data splits, classifier F and decoder G (eval mode)."""
    return open_run(Path(path))


def evaluate(run: TrainedRun | str | Path) -> dict:
    """Measure a run on its test split (accuracy, MSE, PSNR, SSIM, R, re-identification, the
    label-only floor); writes and returns ``metrics.json``."""
    from vicious.runs.evaluation import evaluate_run

    return evaluate_run(run if isinstance(run, TrainedRun) else Path(run))


def reconstruct(run: TrainedRun, images: torch.Tensor, *, policy: str | ReleasePolicy | None = None,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the server sees and rebuilds: F's outputs ``(N, K)`` for ``images`` (``N×C×H×W``
    floats in [0, 1], at the run's channels and size) and G's reconstructions of them
    (``N×C×H×W`` in [0, 1]). ``policy``: a release policy (``"top-1"``, ``"label-only"``,
    ...) applied to the outputs before G sees them, as a careful user would apply it before
    sending them (default: the run's ``release``); the outputs are then the released vector,
    in the form the server observes (probabilities for a ``softmax`` run)."""
    from vicious.metrics._validate import validate_images
    from vicious.runs.evaluation import reconstruct as forward

    info, size = run.splits.info, run.config.data.image_size
    validate_images(images, "images")
    if tuple(images.shape[1:]) != (info.channels, size, size):
        raise ValueError(f"images must be N×{info.channels}×{size}×{size} for this run, got {tuple(images.shape)}")
    chosen = parse_policy(policy) if isinstance(policy, str) else policy
    return forward(run, images, batch_size=batch_size, policy=chosen)


def release(outputs: torch.Tensor, policy: str | ReleasePolicy, *, form: Literal["logits", "probabilities"] = "logits",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``outputs`` ``(N, K)`` as ``policy`` releases them (e.g. ``"top-3"``, ``"label-only"``,
    ``"round-2"``, ``"gaussian-0.05"``); ``form``: ``"logits"`` or ``"probabilities"``."""
    chosen = parse_policy(policy) if isinstance(policy, str) else policy
    return chosen(outputs, form, generator=generator)


def calibrate(dataset: str, *, train_limit: int = REFERENCE_IMAGES, settings: SuiteSettings | None = None,
              image_size: int = 32, data_root: str | None = None, out: str | Path | None = None,
              cache_dir: str | Path | None = None, echo=print) -> Path:
    """Train the honest reference zoo on ``dataset`` and save the detectors' thresholds; returns
    the calibration file (``out``, or under the cache, where ``vicious calibrate`` writes it)."""
    _, path = calibrate_references(dataset, train_limit=train_limit, settings=settings, image_size=image_size,
                                   data_root=data_root, out=Path(out) if out else None,
                                   cache_dir=Path(cache_dir) if cache_dir else None, echo=echo)
    return path


def audit(model: str | Path, dataset: str, out: str | Path, *, calibration: str | Path | None = None,
          image_size: int = 32, data_root: str | None = None, echo=print, **options) -> dict:
    """Audit a TorchScript or ONNX file, or a run folder, as ``vicious audit`` does (sandboxed);
    writes ``out/audit.json`` and ``out/audit.html`` and returns the audit (verdict, scores,
    thresholds). ``calibration``: a calibration file (default: the cache's for ``dataset``, else the shipped one)."""
    from vicious.defences.audit import run_audit

    return run_audit(Path(model), dataset, Path(out), image_size=image_size, data_root=data_root,
                     calibration_file=Path(calibration) if calibration else None, echo=echo, **options)
