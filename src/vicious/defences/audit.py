"""``vicious audit``: is this classifier vicious? Evidence a user can check.

Opens a user's classifier (TorchScript, ONNX or run directory) as a black box, in a
sandboxed worker process with limits (:mod:`vicious.defences.sandbox`; with the auditor's
dataset settings, never a run directory's), checks it against the dataset, scores it
with every detector on the dataset's test images (a seeded subset, standing in for the
user's own), compares each score with
the honest reference classifiers of the saved calibration and writes:

    OUT/audit.json   every score, each detector's verdict and thresholds, the overall verdict
    OUT/audit.html   a self-contained page: score plots against the honest references,
                     shadow reconstructions from labels and from outputs
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import vicious
from vicious.data import DatasetSplits, load_dataset
from vicious.defences.black_box import BlackBox, open_classifier
from vicious.defences.calibration import (
    DECIDING_DETECTORS,
    Calibration,
    calibrate,
    calibration_path,
    describe,
    user_images,
)
from vicious.defences.outputs import Form
from vicious.defences.report import audit_page, verdict_sentence
from vicious.defences.sandbox import SandboxLimits
from vicious.defences.suite import DETECTORS, PRIMARY, score_classifier
from vicious.runs.files import (
    atomic_write_json,
    atomic_write_text,
    refuse_outside_links,
)
from vicious.runs.locks import folder_lock

VERDICT_RULE = (
    "per detector: likely-honest if its primary score <= mean + 2 sd of the honest references, likely-vicious "
    f"if > mean + 4 sd, inconclusive between; overall, from the deciding detectors ({', '.join(DECIDING_DETECTORS)}): "
    "likely-vicious if any says so, likely-honest if all say so, else inconclusive; the others are advisory"
)


def load_or_calibrate(
    dataset: str, *, image_size: int = 32, calibration_file: Path | None = None, allow_calibrate: bool = False,
    num_models: int = 4, data_root: str | None = None, echo: Callable[[str], None] = print,
) -> tuple[Calibration, Path]:
    """The saved calibration for ``dataset`` (or ``calibration_file``); trains one if allowed and missing."""
    path = Path(calibration_file) if calibration_file else calibration_path(dataset, image_size)
    if path.is_file() or calibration_file:  # a named file that is missing: load says so
        calibration = Calibration.load(path)
    elif allow_calibrate:
        echo(f"no calibration for {dataset} yet; training {num_models} honest reference classifiers (minutes on a CPU)")
        calibration, path = calibrate(dataset, num_models=num_models, image_size=image_size, data_root=data_root, echo=echo)
    else:
        raise FileNotFoundError(
            f"no calibration for {dataset} at {path}; run 'vicious calibrate --data {dataset}' once "
            "(trains small honest reference classifiers, minutes on a CPU) or add --calibrate"
        )
    if calibration.dataset != dataset or calibration.image_size != image_size:
        raise ValueError(
            f"{path} calibrates {calibration.dataset} at {calibration.image_size} px, not {dataset} at {image_size} px; "
            f"run 'vicious calibrate --data {dataset}'"
        )
    return calibration, path


def run_audit(
    model: Path, dataset: str, out: Path, *, image_size: int = 32, data_root: str | None = None,
    form: Form | None = None, calibration_file: Path | None = None, allow_calibrate: bool = False,
    num_models: int = 4, limits: SandboxLimits | None = None, unconfined: bool = False,
    echo: Callable[[str], None] = print,
) -> dict:
    """Audit ``model`` on ``dataset``; writes OUT/audit.json and OUT/audit.html and returns the audit.

    The model runs in one sandboxed worker for the whole audit, within ``limits``;
    ``unconfined``: where no sandbox is available, run TorchScript anyway, with the limits only.
    """
    model, out = Path(model), Path(out)
    # Cheap checks first: a wrong file or shape fails before any calibration or scoring.
    splits = load_dataset(dataset, root=data_root, image_size=image_size)
    with open_classifier(model, splits.info, image_size, form=form, limits=limits, unconfined=unconfined) as classifier:
        refuse_outside_links(out)
        with folder_lock(out):  # one audit writes a folder at a time (the lock checks it is writable)
            return _audit(classifier, splits, model, dataset, out, image_size=image_size, data_root=data_root,
                          calibration_file=calibration_file, allow_calibrate=allow_calibrate,
                          num_models=num_models, echo=echo)


def _audit(classifier: BlackBox, splits: DatasetSplits, model: Path, dataset: str, out: Path, *, image_size: int, data_root: str | None,
           calibration_file: Path | None, allow_calibrate: bool, num_models: int, echo: Callable[[str], None]) -> dict:
    echo(f"{classifier.source}: input (N, {', '.join(map(str, classifier.input_shape))}), "
         f"{classifier.num_outputs} outputs ({classifier.form})")
    calibration, calibration_at = load_or_calibrate(
        dataset, image_size=image_size, calibration_file=calibration_file, allow_calibrate=allow_calibrate,
        num_models=num_models, data_root=data_root, echo=echo)
    settings = calibration.settings
    images, labels = user_images(splits, settings)
    echo(f"scoring on {len(images)} {dataset} test images")
    result = score_classifier(classifier, images, settings, labels)
    verdict, each = calibration.verdicts(result.primary())
    descriptions = {d.name: d.description for d in DETECTORS}
    audit = {
        "model": str(model),
        "source": classifier.source,
        "dataset": dataset,
        "image_size": image_size,
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
                "scores": scores,
                "honest_reference_scores": calibration.honest_scores.get(name, {}),
            }
            for name, scores in result.scores.items()
        },
        "excess_leakage_details": result.leakage.details,
        "calibration": {
            "path": str(calibration_at),
            "created": calibration.created,
            "num_references": len(calibration.references),
            "reference_accuracy": [r.accuracy for r in calibration.references],
            "reference_training": calibration.reference_training,
        },
        "settings": settings.model_dump(),
        "vicious_version": vicious.__version__,
    }
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "audit.html", audit_page(audit, result.leakage.examples))
    echo(f"verdict: {verdict}")
    echo(verdict_sentence(audit))
    for name, entry in audit["detectors"].items():
        echo(f"  {name:18} ({entry['role']}) {entry['primary']} = {entry['score']:.4g}: {entry['verdict']} "
             f"({describe(calibration.thresholds[name])})")
    echo(f"wrote {out / 'audit.json'} and {out / 'audit.html'}")
    return audit
