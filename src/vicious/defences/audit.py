"""``vicious audit``: is this classifier vicious? Evidence a user can check.

Opens a user's classifier (TorchScript, ONNX or run directory) as a black box, in a
sandboxed worker process with limits (:mod:`vicious.defences.sandbox`; with the auditor's
dataset settings, never a run directory's), checks it against the data, scores it with
every detector on

* a benchmark dataset's test images (a seeded subset), against the calibration in the
  cache (``vicious calibrate``) or the one shipped with the package, or
* the user's own images (a folder of class folders or of images, or an .npz; read at the
  model's input size and channels, K from the model), against the calibration of those
  images (``vicious calibrate --data FOLDER``) or a named one,

compares each score with the honest reference zoo of the calibration and writes:

    OUT/audit.json   every score, each detector's verdict and thresholds, the overall verdict
    OUT/audit.html   a self-contained page: score plots against the honest references,
                     shadow reconstructions from labels and from outputs
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import vicious
from vicious.data import load_dataset
from vicious.defences.black_box import BlackBox, open_classifier, own_images_info
from vicious.defences.calibration import (
    DECIDING_DETECTORS,
    Calibration,
    calibrate,
    calibrate_own_images,
    calibration_path,
    describe,
    own_calibration_path,
    own_images_split,
    shipped_calibration,
    user_images,
)
from vicious.defences.report import audit_page, tail_text, verdict_sentence
from vicious.defences.sandbox import SandboxLimits
from vicious.defences.suite import DETECTORS, PRIMARY, SuiteSettings, score_classifier
from vicious.release.outputs import Form
from vicious.runs.files import (
    atomic_write_json,
    atomic_write_text,
    refuse_outside_links,
)
from vicious.runs.locks import folder_lock

VERDICT_RULE = (
    "per detector: likely-honest if its primary score is at most the highest of the honest reference zoo, "
    "likely-vicious if it exceeds that by more than (highest - median), inconclusive between; overall, from the "
    f"deciding detectors ({', '.join(DECIDING_DETECTORS)}): likely-vicious if any says so, likely-honest if all "
    "say so, else inconclusive; the others are advisory"
)


def load_or_calibrate(
    dataset: str, *, image_size: int = 32, calibration_file: Path | None = None, allow_calibrate: bool = False,
    data_root: str | None = None, echo: Callable[[str], None] = print,
) -> tuple[Calibration, Path]:
    """The calibration for ``dataset``: ``calibration_file``, else the cache's (``vicious calibrate``),
    else the one shipped with the package; trains one if allowed and none exists."""
    path = Path(calibration_file) if calibration_file else calibration_path(dataset, image_size)
    shipped = shipped_calibration(dataset, image_size)
    if path.is_file() or calibration_file:  # a named file that is missing: load says so
        calibration = Calibration.load(path)
    elif allow_calibrate:
        echo(f"no calibration for {dataset} yet; training the honest reference zoo (minutes on a CPU)")
        calibration, path = calibrate(dataset, image_size=image_size, data_root=data_root, echo=echo)
    elif shipped is not None:
        path, calibration = shipped, Calibration.load(shipped)
    else:
        raise FileNotFoundError(
            f"no calibration for {dataset} at {image_size} px; run 'vicious calibrate --data {dataset}' once "
            "(trains the honest reference zoo, minutes on a CPU) or add --calibrate"
        )
    if calibration.dataset != dataset or calibration.image_size != image_size:
        raise ValueError(
            f"{path} calibrates {calibration.dataset} at {calibration.image_size} px, not {dataset} at {image_size} px; "
            f"run 'vicious calibrate --data {dataset}'"
        )
    return calibration, path


def is_own_images(data: str) -> bool:
    """Whether ``--data`` names the user's own images (a folder or an .npz) rather than a benchmark dataset."""
    from vicious.data import dataset_names

    return data.strip().lower() not in dataset_names() and (Path(data).exists() or data.endswith((".npz", "/")))


def run_audit(
    model: Path, dataset: str, out: Path, *, image_size: int = 32, data_root: str | None = None,
    form: Form | None = None, calibration_file: Path | None = None, allow_calibrate: bool = False,
    limits: SandboxLimits | None = None, unconfined: bool = False, task: str = "multiclass",
    echo: Callable[[str], None] = print,
) -> dict:
    """Audit ``model`` on ``dataset`` (a benchmark name, or a folder or .npz of the user's own
    images); writes OUT/audit.json and OUT/audit.html and returns the audit.

    The model runs in one sandboxed worker for the whole audit, within ``limits``;
    ``unconfined``: where no sandbox is available, run TorchScript anyway, with the limits only.
    On the user's own images, the model's input and K decide how they are read; ``task``
    (multiclass or multilabel) says how its outputs are read.
    """
    model, out = Path(model), Path(out)
    own = is_own_images(dataset)
    # Cheap checks first: a wrong file or shape fails before any calibration or scoring.
    if own:
        splits, info = None, own_images_info(task)  # type: ignore[arg-type]
    else:
        splits = load_dataset(dataset, root=data_root, image_size=image_size)
        info = splits.info
    with open_classifier(model, info, image_size, form=form, limits=limits, unconfined=unconfined) as classifier:
        refuse_outside_links(out)
        with folder_lock(out):  # one audit writes a folder at a time (the lock checks it is writable)
            echo(f"{classifier.source}: input (N, {', '.join(map(str, classifier.input_shape))}), "
                 f"{classifier.num_outputs} outputs ({classifier.form})")
            if splits is None:
                data = _own_images(Path(dataset), classifier, calibration_file, allow_calibrate, echo)
            else:
                calibration, at = load_or_calibrate(dataset, image_size=image_size, calibration_file=calibration_file,
                                                    allow_calibrate=allow_calibrate, data_root=data_root, echo=echo)
                images, labels = user_images(splits, calibration.settings)
                data = AuditData(images, labels, calibration, at, f"{dataset} test images ({splits.source})")
            return _audit(classifier, data, model, dataset, out, echo=echo)


@dataclass
class AuditData:
    """The images an audit scores (N, C, S, S) in [0, 1], their labels or None, and the calibration."""

    images: torch.Tensor
    labels: torch.Tensor | None
    calibration: Calibration
    calibration_at: Path
    description: str


def _own_images(path: Path, classifier: BlackBox, calibration_file: Path | None, allow_calibrate: bool,
                echo: Callable[[str], None]) -> AuditData:
    """The user's images, read as the model takes them, and the calibration that fits them: the
    named file, else the cache's calibration of these very images (``vicious calibrate --data``)."""
    from vicious.data import load_user_images

    channels, size = classifier.input_shape[0], classifier.input_shape[1]
    multiclass = classifier.task == "multiclass"
    named = Calibration.load(calibration_file) if calibration_file else None
    settings = named.settings if named else SuiteSettings()
    own = load_user_images(path, channels=channels, image_size=size, seed=settings.seed,
                           num_classes=classifier.num_outputs if multiclass else None)
    labels = own.labels if multiclass else None
    scored, _ = own_images_split(len(own.images), labels is not None, settings)
    images = own.images[scored]
    labels = labels[scored] if labels is not None else None
    if named is not None:
        calibration, at = named, Path(calibration_file)  # type: ignore[arg-type]
    else:
        at = own_calibration_path(images, size)
        if at.is_file():
            calibration = Calibration.load(at)
        elif allow_calibrate and labels is not None:
            echo(f"no calibration for these images yet; training the honest reference zoo on {path}")
            calibration, at = calibrate_own_images(path, settings=settings, image_size=size,
                                                   num_classes=classifier.num_outputs)
        else:
            how = (f"run 'vicious calibrate --data {path}' once (or add --calibrate)" if labels is not None else
                   "these images are unlabelled: calibrate on labelled images of the same kind "
                   "('vicious calibrate --data FOLDER-OF-CLASS-FOLDERS') and pass --calibration FILE")
            raise FileNotFoundError(f"no calibration for the images in {path}; {how}")
    wanted = (channels, size, classifier.num_outputs)
    got = (calibration.channels or channels, calibration.image_size, calibration.num_outputs or classifier.num_outputs)
    if got != wanted:
        raise ValueError(f"{at} calibrates classifiers of input ({got[0]}, {got[1]}, {got[1]}) and K = {got[2]}, "
                         f"not ({channels}, {size}, {size}) and K = {classifier.num_outputs}; calibrate on images "
                         "of this model's kind ('vicious calibrate --data FOLDER --num-classes K')")
    return AuditData(images, labels, calibration, at, own.source)


def _audit(classifier: BlackBox, data: AuditData, model: Path, dataset: str, out: Path, *,
           echo: Callable[[str], None]) -> dict:
    calibration, calibration_at, settings = data.calibration, data.calibration_at, data.calibration.settings
    images, labels = data.images, data.labels
    echo(f"scoring on {len(images)} {data.description}")
    result = score_classifier(classifier, images, settings, labels)
    verdict, each = calibration.verdicts(result.primary())
    descriptions = {d.name: d.description for d in DETECTORS}
    audit: dict[str, Any] = {
        "model": str(model),
        "source": classifier.source,
        "dataset": dataset,
        "images": data.description,
        "labelled": labels is not None,
        "image_size": classifier.input_shape[-1],
        "input_shape": list(classifier.input_shape),
        "num_outputs": classifier.num_outputs,
        "output_form": classifier.form,
        "task": classifier.task,
        "num_images": len(images),
        "accuracy": result.accuracy,
        "verdict": verdict,
        "verdict_rule": VERDICT_RULE,
        "detectors": {
            name: {
                "description": descriptions[name],
                "primary": PRIMARY[name],
                "score": scores[PRIMARY[name]],
                "verdict": each[name],
                "role": "deciding" if name in DECIDING_DETECTORS else "advisory",
                "thresholds": calibration.thresholds[name].model_dump(),
                "tail_probability": calibration.tail_probability(name, scores[PRIMARY[name]]),
                "scores": scores,
                "honest_reference_scores": calibration.honest_scores.get(name, {}),
            }
            for name, scores in result.scores.items()
        },
        "excess_leakage_details": result.leakage.details,
        "calibration": {
            "path": str(calibration_at),
            "created": calibration.created,
            "data_source": calibration.data_source,
            "num_references": len(calibration.references),
            "references": [{"name": r.name, "accuracy": r.accuracy} for r in calibration.references],
            "reference_training": calibration.reference_training,
            "false_positives": calibration.false_positives.model_dump() if calibration.false_positives else None,
        },
        "settings": settings.model_dump(),
        "vicious_version": vicious.__version__,
    }
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "audit.html", audit_page(audit, result.leakage.examples))
    echo(f"verdict: {verdict}")
    echo(verdict_sentence(audit))
    for name, entry in audit["detectors"].items():
        echo(f"  {name:18} ({entry['role']}) {entry['primary']} = {entry['score']:.4g}: {entry['verdict']}, "
             f"{tail_text(entry['tail_probability'], len(calibration.references))} "
             f"({describe(calibration.thresholds[name])})")
    echo(f"wrote {out / 'audit.json'} and {out / 'audit.html'}")
    return audit
