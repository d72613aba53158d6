"""Calibrating verdicts on honest reference classifiers.

``calibrate`` trains N small honest classifiers (WRN-10-1 on 5000 images, 4 epochs,
no augmentation: CPU-sized, and the recipe of the benchmark's population), scores each with the detector suite on the dataset's test
split, and records every sub-score's honest distribution and, for each detector's
primary score, the thresholds a verdict uses. The calibration is saved as JSON
under the cache directory (``VICIOUS_CACHE`` or ``~/.cache/vicious``) at
``calibration/<dataset>.json`` and reused by every audit; the reference runs stay
beside it (``calibration/<dataset>-references/``), so a re-calibration with more
models only trains the new ones.

The verdict rule, per detector: with mu and sigma the mean and standard deviation
of the n honest reference scores (sigma at least 1e-3 * max(1, |mu|)),

* score <= mu + 2 sigma              -> likely-honest,
* score >  mu + 4 sigma              -> likely-vicious,
* in between                         -> inconclusive.

With normally distributed honest scores, 2.3 % of honest classifiers land above
the first threshold and 0.003 % above the second (more with few references:
calibrate with more models to tighten them). Thresholds describe honest models
trained like the references: in the benchmark, honest models of one population
scored against another population's thresholds were never called likely-vicious,
but 4 of 6 came out inconclusive.

Overall verdict, from the *deciding* detectors (those that separated honest from
vicious and adaptive classifiers in ``benchmarks/bench_detectors.py``: excess
leakage and sensitivity): likely-vicious if any of them says so, likely-honest if
all of them say so, inconclusive otherwise. The output statistics are *advisory*:
shown with their own verdict, they do not change the overall one (their scale
depends on how long a classifier was trained).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import vicious
from vicious.config.schema import ConfigError, RunConfig, apply_overrides, format_validation_error
from vicious.data import DatasetSplits, cache_root, load_dataset
from vicious.defences.black_box import open_classifier
from vicious.defences.suite import PRIMARY, SuiteSettings, score_classifier
from vicious.runs.files import atomic_write_json

Verdict = Literal["likely-honest", "inconclusive", "likely-vicious"]
DECIDING_DETECTORS = ("excess_leakage", "sensitivity")
HONEST_SIGMAS, VICIOUS_SIGMAS = 2.0, 4.0
# The honest population of benchmarks/bench_detectors.py is trained the same way.
REFERENCE_IMAGES, REFERENCE_EPOCHS = 5000, 4  # also in vicious.cli.defences


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    likely_honest_at_most: float
    likely_vicious_above: float
    honest_mean: float
    honest_std: float

    def verdict(self, score: float) -> Verdict:
        if score <= self.likely_honest_at_most:
            return "likely-honest"
        return "likely-vicious" if score > self.likely_vicious_above else "inconclusive"


def thresholds_from(honest_scores: list[float]) -> Thresholds:
    """The rule of the module docstring for n >= 2 honest reference scores."""
    if len(honest_scores) < 2:
        raise ValueError(f"thresholds need at least 2 honest reference scores, got {len(honest_scores)}")
    t = torch.tensor(honest_scores, dtype=torch.float64)
    mu, sigma = float(t.mean()), float(t.std())
    sigma = max(sigma, 1e-3 * max(1.0, abs(mu)))
    return Thresholds(likely_honest_at_most=mu + HONEST_SIGMAS * sigma, likely_vicious_above=mu + VICIOUS_SIGMAS * sigma,
                      honest_mean=mu, honest_std=sigma)


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    seed: int
    accuracy: float | None
    run_dir: str


class Calibration(BaseModel):
    """Honest reference scores and the thresholds derived from them, for one dataset."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["vicious.calibration/1"] = "vicious.calibration/1"
    vicious_version: str = vicious.__version__
    dataset: str
    image_size: int
    settings: SuiteSettings
    reference_training: dict = Field(description="how the honest references were trained")
    references: list[Reference]
    honest_scores: dict[str, dict[str, list[float]]] = Field(description="detector -> sub-score -> one score per reference")
    thresholds: dict[str, Thresholds] = Field(description="detector -> thresholds of its primary score")
    created: str

    @classmethod
    def from_scores(cls, dataset: str, image_size: int, settings: SuiteSettings,
                    honest_scores: dict[str, dict[str, list[float]]], references: list[Reference],
                    reference_training: dict | None = None) -> Calibration:
        thresholds = {d: thresholds_from(subs[PRIMARY[d]]) for d, subs in honest_scores.items() if d in PRIMARY}
        return cls(dataset=dataset, image_size=image_size, settings=settings, references=references,
                   reference_training=reference_training or {}, honest_scores=honest_scores, thresholds=thresholds,
                   created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def verdicts(self, primary_scores: dict[str, float]) -> tuple[Verdict, dict[str, Verdict]]:
        """(overall verdict, verdict of each detector) for {detector: primary score}."""
        each = {d: self.thresholds[d].verdict(s) for d, s in primary_scores.items() if d in self.thresholds}
        deciding = [each.get(d, "inconclusive") for d in DECIDING_DETECTORS]
        if "likely-vicious" in deciding:
            return "likely-vicious", each
        if all(v == "likely-honest" for v in deciding):
            return "likely-honest", each
        return "inconclusive", each

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no calibration at {path}")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as err:
            raise ConfigError(f"{path} is not a usable calibration ({format_validation_error(err, 'file')}); "
                              "delete it and run 'vicious calibrate' again") from None


def calibration_path(dataset: str, image_size: int = 32, cache_dir: Path | None = None) -> Path:
    suffix = "" if image_size == 32 else f"-{image_size}px"
    return cache_root(cache_dir) / "calibration" / f"{dataset}{suffix}.json"


def reference_config(
    dataset: str, seed: int, *, train_limit: int = REFERENCE_IMAGES, epochs: int = REFERENCE_EPOCHS,
    image_size: int = 32, data_root: str | None = None, regime: str = "honest", output: str = "raw",
    overrides: dict | None = None,
) -> RunConfig:
    """A CPU-sized run (WRN-10-1, ``train_limit`` images without augmentation, batch 64)."""
    from vicious.config.presets import get_preset

    name = f"{dataset}-{regime}" + ("-softmax" if output == "softmax" else "") + "-small"
    return apply_overrides(get_preset(name), {
        "seed": seed, "data.root": data_root, "data.image_size": image_size, "data.train_limit": train_limit,
        "data.val_limit": 500, "data.test_limit": 500, "data.augment": False, "train.epochs": epochs,
        "train.decoder_epochs": 1, "train.batch_size": 64, "train.progress": False, **(overrides or {}),
    })


def user_images(splits: DatasetSplits, settings: SuiteSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, S, S) in [0, 1], labels): the seeded test subset that audits score on,
    standing in for the user's own images."""
    test = splits.test.subset(settings.num_images, seed=settings.seed)
    return test.float_images(), test.labels


def calibrate(
    dataset: str,
    *,
    num_models: int = 4,
    settings: SuiteSettings | None = None,
    train_limit: int = REFERENCE_IMAGES,
    epochs: int = REFERENCE_EPOCHS,
    image_size: int = 32,
    data_root: str | None = None,
    cache_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[Calibration, Path]:
    """Train (or reuse) ``num_models`` honest references, score them, save the calibration."""
    from vicious.runs.training import train_run

    settings = settings or SuiteSettings()
    if num_models < 2:
        raise ValueError(f"calibration needs at least 2 reference models (--num-models), got {num_models}")
    path = calibration_path(dataset, image_size, cache_dir)
    folder = path.parent / f"{path.stem}-references"
    splits = load_dataset(dataset, root=data_root, image_size=image_size)
    images, labels = user_images(splits, settings)
    scores: dict[str, dict[str, list[float]]] = {}
    references = []
    for i in range(num_models):
        seed, run_dir = i + 1, folder / f"honest-{i + 1}"
        config = reference_config(dataset, seed, train_limit=train_limit, epochs=epochs, image_size=image_size,
                                  data_root=data_root)
        if not (run_dir / "classifier.safetensors").exists():
            echo(f"training honest reference {i + 1}/{num_models} (WRN-10-1, {train_limit} images, {epochs} epochs)")
            train_run(config, run_dir, resume=(run_dir / "config.yaml").exists())
        # Trained just now, by this process: loaded here, not in a sandboxed worker.
        with open_classifier(run_dir, splits.info, image_size, trusted=True) as reference:
            result = score_classifier(reference, images, settings, labels)
        echo(f"  reference {i + 1}: accuracy {result.accuracy:.3f}, "
             + ", ".join(f"{d} {s:.3f}" for d, s in result.primary().items()))
        for detector, subs in result.scores.items():
            for sub, value in subs.items():
                scores.setdefault(detector, {}).setdefault(sub, []).append(value)
        references.append(Reference(name=run_dir.name, seed=seed, accuracy=result.accuracy, run_dir=str(run_dir)))
    calibration = Calibration.from_scores(
        dataset, image_size, settings, scores, references,
        {"model": "WRN-10-1", "train_limit": train_limit, "epochs": epochs, "augment": False, "batch_size": 64},
    )
    calibration.save(path)
    return calibration, path


def describe(thresholds: Thresholds) -> str:
    return (f"likely-honest <= {thresholds.likely_honest_at_most:.4g} < inconclusive <= "
            f"{thresholds.likely_vicious_above:.4g} < likely-vicious")
