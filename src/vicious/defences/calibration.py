"""Calibrating verdicts on a zoo of honest reference classifiers.

``calibrate`` trains the honest reference zoo (:mod:`vicious.defences.zoo`: eight
classifiers of four families and varied recipes, half releasing logits and half
probabilities) on the dataset's training images, scores each with the detector suite
on the images every audit scores on (a seeded subset of the test split), and saves
the scores and the thresholds derived from them as JSON under the cache directory
(``VICIOUS_CACHE`` or ``~/.cache/vicious``) at ``calibration/<dataset>.json``. The
package ships the calibration of the embedded Fashion-MNIST default
(``vicious/defences/calibrations/``), so a first audit needs none.

The verdict rule, per detector, from the n honest scores (no distribution assumed):

* score <= the highest honest score                        -> likely-honest,
* score >  highest + (highest - median of the honest ones) -> likely-vicious,
* in between                                               -> inconclusive;

that is, a score is likely-vicious when it lies beyond the honest zoo's range by as
much again as the upper half of that range. Each score is also reported as an
empirical tail probability, (1 + #honest scores >= it) / (n + 1), with n.

Overall verdict, from the *deciding* detectors: likely-vicious if any of them says
so, likely-honest if all of them say so, inconclusive otherwise; the others are
advisory (their scale follows the recipe more than the leakage:
``benchmarks/bench_audit.py``). The rule's false-positive rate is measured by leaving
one reference out at a time: thresholds from the others, the verdict on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import vicious
from vicious.config.schema import ConfigError, format_validation_error
from vicious.data import DatasetInfo, DatasetSplits, cache_root, load_dataset
from vicious.defences.suite import PRIMARY, SuiteSettings, score_classifier
from vicious.defences.zoo import BATCH_SIZE, DEFAULT_ZOO, ZooMember, reference_box, train_reference
from vicious.runs.files import atomic_write_json
from vicious.seeding import generator

Verdict = Literal["likely-honest", "inconclusive", "likely-vicious"]
VERDICTS: tuple[Verdict, ...] = ("likely-honest", "inconclusive", "likely-vicious")
DECIDING_DETECTORS = ("excess_leakage",)
REFERENCE_IMAGES = 5000  # training images per reference (also in vicious.cli.defences)
SHIPPED = Path(__file__).resolve().parent / "calibrations"
CALIBRATION_FORMAT: Literal["vicious.calibration/2"] = "vicious.calibration/2"


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    likely_honest_at_most: float = Field(description="the highest honest reference score")
    likely_vicious_above: float = Field(description="highest + (highest - median)")
    honest_median: float

    def verdict(self, score: float) -> Verdict:
        if score <= self.likely_honest_at_most:
            return "likely-honest"
        return "likely-vicious" if score > self.likely_vicious_above else "inconclusive"



def tail_probability(score: float, honest_scores: Sequence[float]) -> float:
    """(1 + number of honest scores >= ``score``) / (n + 1): how honest-like the score is."""
    return (1 + sum(h >= score for h in honest_scores)) / (len(honest_scores) + 1)


def thresholds_from(honest_scores: Sequence[float]) -> Thresholds:
    """The rule of the module docstring for n >= 2 honest reference scores."""
    if len(honest_scores) < 2:
        raise ValueError(f"thresholds need at least 2 honest reference scores, got {len(honest_scores)}")
    t = torch.tensor(list(honest_scores), dtype=torch.float64)
    highest, median = float(t.max()), float(t.median())  # the lower median for an even n
    spread = max(highest - median, 1e-3 * max(1.0, abs(median)))  # a zoo of equal scores keeps a band
    return Thresholds(likely_honest_at_most=highest, likely_vicious_above=highest + spread, honest_median=median)


def overall_verdict(each: dict[str, Verdict], deciding_detectors: Sequence[str] = DECIDING_DETECTORS) -> Verdict:
    """Likely-vicious if a deciding detector says so, likely-honest if all of them do, else inconclusive."""
    deciding = [each.get(d, "inconclusive") for d in deciding_detectors]
    if "likely-vicious" in deciding:
        return "likely-vicious"
    return "likely-honest" if all(v == "likely-honest" for v in deciding) else "inconclusive"


class FalsePositives(BaseModel):
    """How the rule treats honest models it was not built from: each reference left out in turn."""

    model_config = ConfigDict(extra="forbid")

    method: str = "leave one reference out: thresholds from the other n - 1, the verdict on it"
    num_references: int
    overall: dict[str, int] = Field(description="verdict -> how many left-out references got it")
    per_detector: dict[str, dict[str, int]]
    left_out: dict[str, Verdict] = Field(description="reference -> its overall verdict when left out")

    @property
    def rate(self) -> float:
        """Share of left-out honest references called likely-vicious."""
        return self.overall["likely-vicious"] / max(self.num_references, 1)


def leave_one_out(names: Sequence[str], honest_scores: dict[str, dict[str, list[float]]]) -> FalsePositives:
    """The verdicts of each reference under thresholds from the others (n >= 3)."""
    n = len(names)
    per_detector = {d: dict.fromkeys(VERDICTS, 0) for d in honest_scores if d in PRIMARY}
    overall, left_out = dict.fromkeys(VERDICTS, 0), {}
    for i, name in enumerate(names):
        each: dict[str, Verdict] = {}
        for detector in per_detector:
            scores = honest_scores[detector][PRIMARY[detector]]
            each[detector] = thresholds_from(scores[:i] + scores[i + 1 :]).verdict(scores[i])
            per_detector[detector][each[detector]] += 1
        left_out[name] = overall_verdict(each)
        overall[left_out[name]] += 1
    return FalsePositives(num_references=n, overall=overall, per_detector=per_detector, left_out=left_out)


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    accuracy: float | None
    member: ZooMember | None = Field(None, description="its architecture and recipe")


class Calibration(BaseModel):
    """Honest reference scores and the thresholds derived from them, for one source of images."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["vicious.calibration/2"] = CALIBRATION_FORMAT
    vicious_version: str = vicious.__version__
    torch_version: str = torch.__version__
    dataset: str = Field(description="a benchmark dataset's name, or 'your images'")
    image_size: int
    channels: int = Field(0, description="C of the references' input (0: not recorded)")
    num_outputs: int = Field(0, description="K of the references (0: not recorded)")
    data_source: str = Field("", description="where the images came from (embedded, a folder, ...)")
    settings: SuiteSettings
    reference_training: dict = Field(description="how the honest references were trained")
    references: list[Reference]
    honest_scores: dict[str, dict[str, list[float]]] = Field(description="detector -> sub-score -> one score per reference")
    thresholds: dict[str, Thresholds] = Field(description="detector -> thresholds of its primary score")
    false_positives: FalsePositives | None = Field(None, description="leave one out; None with fewer than 3 references")
    created: str
    seconds: float | None = Field(None, description="wall time of the calibration")

    @classmethod
    def from_scores(cls, dataset: str, image_size: int, settings: SuiteSettings,
                    honest_scores: dict[str, dict[str, list[float]]], references: list[Reference],
                    reference_training: dict | None = None, **fields) -> Calibration:
        thresholds = {d: thresholds_from(subs[PRIMARY[d]]) for d, subs in honest_scores.items() if d in PRIMARY}
        names = [r.name for r in references]
        false_positives = leave_one_out(names, honest_scores) if len(names) >= 3 else None
        return cls(dataset=dataset, image_size=image_size, settings=settings, references=references,
                   reference_training=reference_training or {}, honest_scores=honest_scores, thresholds=thresholds,
                   false_positives=false_positives, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    def verdicts(self, primary_scores: dict[str, float]) -> tuple[Verdict, dict[str, Verdict]]:
        """(overall verdict, verdict of each detector) for {detector: primary score}."""
        each = {d: self.thresholds[d].verdict(s) for d, s in primary_scores.items() if d in self.thresholds}
        return overall_verdict(each), each

    def tail_probability(self, detector: str, score: float) -> float:
        """:func:`tail_probability` of ``score`` among the references' primary scores of ``detector``."""
        return tail_probability(score, self.honest_scores[detector][PRIMARY[detector]])

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no calibration at {path}")
        if path.stat().st_size > 64 << 20:  # a calibration holds a few hundred numbers
            raise ConfigError(f"{path} is {path.stat().st_size >> 20} MiB, not a calibration; run 'vicious calibrate'")
        text = path.read_bytes()
        try:
            found = json.loads(text).get("format")
        except (ValueError, AttributeError):
            found = None
        if isinstance(found, str) and found.startswith("vicious.calibration/") and found != CALIBRATION_FORMAT:
            raise ConfigError(f"{path} was made by another version of vicious ({found}, this one reads "
                              f"{CALIBRATION_FORMAT}); run 'vicious calibrate' again, or delete it to use the shipped one")
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ConfigError(f"{path} is not a usable calibration ({format_validation_error(err, 'file')}); "
                              "delete it and run 'vicious calibrate' again") from None


def _file_name(dataset: str, image_size: int) -> str:
    return f"{dataset}.json" if image_size == 32 else f"{dataset}-{image_size}px.json"


def calibration_path(dataset: str, image_size: int = 32, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / "calibration" / _file_name(dataset, image_size)


def shipped_calibration(dataset: str, image_size: int = 32) -> Path | None:
    """The calibration this package ships for ``dataset`` at ``image_size``, if any."""
    path = SHIPPED / _file_name(dataset, image_size)
    return path if path.is_file() else None


def user_images(splits: DatasetSplits, settings: SuiteSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, S, S) in [0, 1], labels): the seeded test subset that audits score on,
    standing in for the user's own images."""
    test = splits.test.subset(settings.num_images, seed=settings.seed)
    return test.float_images(), test.labels


def data_digest(images: torch.Tensor) -> str:
    """A short digest of the images a calibration was trained or scored on."""
    return hashlib.sha256((images * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def pool_scores(per_reference: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """detector -> sub-score -> one value per reference, from each reference's ``SuiteResult.scores``."""
    pooled: dict[str, dict[str, list[float]]] = {}
    for scores in per_reference:
        for detector, subs in scores.items():
            for sub, value in subs.items():
                pooled.setdefault(detector, {}).setdefault(sub, []).append(value)
    return pooled


def calibrate_on(
    train_images: torch.Tensor, train_labels: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None,
    info: DatasetInfo, *, image_size: int, settings: SuiteSettings, zoo: Sequence[ZooMember] = DEFAULT_ZOO,
    data_source: str = "", echo: Callable[[str], None] = print,
) -> Calibration:
    """Train the honest ``zoo`` on (``train_images``, ``train_labels``), score each member on
    ``images`` (the images audits will score on) and derive the thresholds."""
    from vicious.runs.hardware import cpu_has_native_bf16

    if len(zoo) < 3:
        raise ValueError(f"calibration needs at least 3 honest references, got {len(zoo)}")
    start, bf16 = time.perf_counter(), cpu_has_native_bf16()
    scores, references = [], []
    for i, member in enumerate(zoo):
        echo(f"honest reference {i + 1}/{len(zoo)}: {member.name} ({member.architecture}, {member.epochs} epochs, "
             f"{len(train_images)} images, releases {member.form})")
        network = train_reference(member, train_images, train_labels, info, image_size, bf16=bf16)
        result = score_classifier(reference_box(network, member, info, image_size), images, settings, labels)
        accuracy = "" if result.accuracy is None else f"accuracy {result.accuracy:.3f}, "
        echo(f"  {accuracy}" + ", ".join(f"{d} {s:.3f}" for d, s in result.primary().items()))
        scores.append(result.scores)
        references.append(Reference(name=member.name, accuracy=result.accuracy, member=member))
    training = {"zoo": "vicious.defences.zoo", "train_images": len(train_images), "batch_size": BATCH_SIZE,
                "precision": "bf16-mixed" if bf16 else "32-true", "train_digest": data_digest(train_images),
                "scored_digest": data_digest(images)}
    return Calibration.from_scores(info.name, image_size, settings, pool_scores(scores), references, training,
                                   channels=info.channels, num_outputs=info.num_outputs, data_source=data_source,
                                   seconds=round(time.perf_counter() - start, 1))


def calibrate(
    dataset: str,
    *,
    settings: SuiteSettings | None = None,
    train_limit: int = REFERENCE_IMAGES,
    image_size: int = 32,
    data_root: str | None = None,
    zoo: Sequence[ZooMember] = DEFAULT_ZOO,
    out: Path | None = None,
    cache_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[Calibration, Path]:
    """Calibrate on a benchmark dataset: the zoo trained on ``train_limit`` training images
    (a seeded subset), scored on the audit's test subset; saved to ``out`` or the cache."""
    settings = settings or SuiteSettings()
    path = Path(out) if out else calibration_path(dataset, image_size, cache_dir)
    splits = load_dataset(dataset, root=data_root, image_size=image_size)
    train = splits.train.subset(min(train_limit, len(splits.train)), seed=settings.seed)
    images, labels = user_images(splits, settings)
    calibration = calibrate_on(train.float_images(), train.labels, images, labels, splits.info,
                               image_size=image_size, settings=settings, zoo=zoo, data_source=splits.source, echo=echo)
    calibration.save(path)
    return calibration, path


OWN_IMAGES = "your images"  # Calibration.dataset of a calibration on a user's own images


def own_images_split(count: int, labelled: bool, settings: SuiteSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(scored, training) indices into a user's ``count`` own images, seeded by ``settings.seed``:
    unlabelled images are all scored (up to ``settings.num_images``); of labelled ones a third is
    scored (up to ``num_images``) and the rest can train the honest zoo. ``vicious calibrate`` and
    ``vicious audit`` split a folder alike, so both score the same images."""
    order = torch.randperm(count, generator=generator(settings.seed))
    scored = min(settings.num_images, count // 3 if labelled else count)
    return order[:scored], order[scored:]


def own_calibration_path(scored: torch.Tensor, image_size: int, cache_dir: Path | None = None) -> Path:
    """Where ``vicious calibrate`` keeps the calibration of the images ``scored`` (found by their digest)."""
    return cache_root(cache_dir) / "calibration" / f"images-{data_digest(scored)}-{image_size}px.json"


def as_grey_if_grey(images: torch.Tensor) -> torch.Tensor:
    """RGB images whose three channels are equal everywhere, as one channel; others unchanged."""
    if images.shape[1] == 3 and bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()):
        return images[:, :1].contiguous()
    return images


def calibrate_own_images(
    path: Path, *, settings: SuiteSettings | None = None, image_size: int = 32, num_classes: int | None = None,
    zoo: Sequence[ZooMember] = DEFAULT_ZOO, out: Path | None = None, cache_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[Calibration, Path]:
    """Calibrate on a user's own labelled images (class folders, or an .npz with labels): the zoo
    trained on two thirds, scored on the third :func:`own_images_split` sets aside. K is
    ``num_classes``, else the classes the labels name; C is 1 for grey images, else 3."""
    from vicious.data import load_user_images

    settings = settings or SuiteSettings()
    own = load_user_images(path, channels=3, image_size=image_size, num_classes=num_classes, seed=settings.seed)
    if own.labels is None:
        raise ValueError(f"{path} holds no labels, which the honest references need to train; give a folder of class "
                         "folders or an .npz with 'labels' (an unlabelled folder can still be audited, with "
                         "--calibration of labelled images of its kind)")
    if len(own.images) < 48:
        raise ValueError(f"{path} holds {len(own.images)} images; calibrating needs at least 48 (a third is scored)")
    images = as_grey_if_grey(own.images)
    k = num_classes or (len(own.class_names) if own.class_names else int(own.labels.max()) + 1)
    names = own.class_names or [str(i) for i in range(k)]
    info = DatasetInfo(name=OWN_IMAGES, num_outputs=k, channels=images.shape[1], task="multiclass",
                       output_names=tuple(names) + tuple(str(i) for i in range(len(names), k)))
    scored, training = own_images_split(len(images), True, settings)
    calibration = calibrate_on(images[training], own.labels[training], images[scored], own.labels[scored], info,
                               image_size=image_size, settings=settings, zoo=zoo, data_source=own.source, echo=echo)
    target = Path(out) if out else own_calibration_path(images[scored], image_size, cache_dir)
    calibration.save(target)
    return calibration, target


def describe(thresholds: Thresholds) -> str:
    return (f"likely-honest <= {thresholds.likely_honest_at_most:.4g} < inconclusive <= "
            f"{thresholds.likely_vicious_above:.4g} < likely-vicious")
