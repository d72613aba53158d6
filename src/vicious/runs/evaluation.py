"""Evaluating a trained run on its test split: the measures of docs/method.md, "Measures".

Writes ``metrics.json`` (summary) and ``per_sample.csv`` (one row per test image)
into the run directory.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from vicious.data import DatasetSplits
from vicious.release.outputs import log_odds, observed_form
from vicious.release.policies import ReleasePolicy, release_policy, released_outputs
from vicious.seeding import generator
from vicious.runs.files import atomic_write_json, atomic_write_text
from vicious.runs.locks import folder_lock
from vicious.runs.results import METRICS_FILE, check_run_result
from vicious.runs.layout import TrainedRun, open_run
from vicious.metrics import (
    ImageStatistics,
    accuracy,
    bootstrap_ci,
    mse,
    psnr,
    psnr_from_mse,
    reconstruction_risk,
    reidentification,
    ssim,
    summarise_risk,
)


def fit_statistics(splits: DatasetSplits, batch_size: int = 2000) -> ImageStatistics:
    """Pixel mean and covariance of the train + validation images (docs/method.md, "Measures")."""

    def batches():
        for split in (splits.train, splits.val):
            for start in range(0, len(split), batch_size):
                yield split.images[start : start + batch_size].float() / 255

    return ImageStatistics.fit(batches())


@torch.no_grad()
def reconstruct(run: TrainedRun, images: torch.Tensor, batch_size: int | None = None, device=None,
                policy: ReleasePolicy | None = None, seed: int | None = None, decoder: torch.nn.Module | None = None):
    """What the server receives for ``images`` (uint8, or floats in [0, 1]) and G's
    reconstructions of it, in batches (default: the run's ``train.eval_batch_size``); on a CPU
    in the NHWC layout, 1.6x faster for these networks.

    ``policy``: the release policy users apply (default: the run's ``release``). Without one,
    the received vector is F's logits; with one, the released vector in the form the server
    observes (probabilities for a ``softmax`` run), its noise drawn from ``seed`` (default: the
    run's seed). ``decoder``: another decoder of the observed vector in place of the run's G
    (one retrained on released outputs)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = batch_size or run.config.train.eval_batch_size
    policy = policy or release_policy(run.config.release)
    releases = _receives_released(policy, decoder)
    draws = generator(run.config.seed if seed is None else seed)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    classifier = run.classifier.to(device, memory_format=layout).eval()
    decoder = (decoder or run.decoder).to(device, memory_format=layout).eval()
    received, recs = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        x = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).contiguous(memory_format=layout)
        out = classifier(x)
        if releases:
            out = released_outputs(policy, out.float(), run.config.output, run.splits.info.task, draws)
            rec = decoder.forward_observed(out)
        else:
            rec = decoder(out)
        received.append(out.cpu())
        recs.append(rec.contiguous().cpu())
    return torch.cat(received), torch.cat(recs)


def _receives_released(policy: ReleasePolicy, decoder: torch.nn.Module | None) -> bool:
    """Whether ``reconstruct`` returns the released vector in the observed form (a policy, or
    another decoder, which takes the observed vector), else F's logits."""
    return policy.name != "none" or decoder is not None


def label_only_decoder(splits: DatasetSplits):
    """The label-only floor of a dataset: class means (attribute-pattern means) of its training images."""
    from vicious.attack.label_only import LabelOnlyDecoder

    num_classes = None if splits.info.task == "multilabel" else splits.info.num_outputs
    return LabelOnlyDecoder(splits.train.images, splits.train.labels, num_classes)


def reconstruction_measures(x: torch.Tensor, x_rec: torch.Tensor, statistics: ImageStatistics,
                            fraction: float) -> tuple[dict, dict[str, torch.Tensor]]:
    """What a reconstruction reveals: (summary, per-image tensors) of MSE, PSNR, SSIM and R."""
    per = {"mse": mse(x, x_rec), "psnr": psnr(x, x_rec), "ssim": ssim(x, x_rec),
           "r_exact": reconstruction_risk(x, x_rec, statistics, variant="exact"),
           "r_principal": reconstruction_risk(x, x_rec, statistics, variant="principal", variance_fraction=fraction)}
    summary = {
        "mse": float(per["mse"].mean()),
        "psnr": float(psnr_from_mse(per["mse"].mean())),
        "psnr_per_image_mean": float(per["psnr"].mean()),
        "ssim": float(per["ssim"].mean()),
        "risk": {
            "exact": summarise_risk(per["r_exact"]),
            "principal": {**summarise_risk(per["r_principal"]), "variance_fraction": fraction,
                          "components": statistics.components_for(fraction)},
        },
        "reidentification": {
            "pixel": reidentification(x, x_rec, space="pixel"),
            "principal": reidentification(x, x_rec, space="principal", stats=statistics, variance_fraction=fraction),
        },
    }
    return summary, per


def evaluate_run(
    run_dir: Path | TrainedRun, *, statistics: ImageStatistics | None = None, write: bool = True
) -> dict:
    """Measure a run on its test split; returns (and writes) the metrics dictionary.

    ``label_only`` holds the same measures for the label-only floor: each test image
    replaced by the mean training image of the class this run's classifier predicted.
    """
    folder = run_dir.path if isinstance(run_dir, TrainedRun) else Path(run_dir)
    if not write:
        return _evaluate(run_dir, statistics, write)
    if not folder.is_dir():
        open_run(folder)  # says what is missing, before a lock would create the folder
    with folder_lock(folder):  # one writer: not while the run trains or another evaluation writes
        return _evaluate(run_dir, statistics, write)


def _evaluate(run_dir: Path | TrainedRun, statistics: ImageStatistics | None, write: bool) -> dict:
    run = run_dir if isinstance(run_dir, TrainedRun) else open_run(Path(run_dir))
    config, splits = run.config, run.splits
    logits, correct, (measured, per), (floor, floor_per) = _measure(run, None, None, statistics)
    labels = splits.test.labels
    per_image_accuracy = correct.mean(dim=1) if correct.ndim == 2 else correct
    metrics = {
        "regime": config.regime,
        "dataset": splits.info.name,
        "output": config.output,
        "preset": config.preset,
        "seed": config.seed,
        "release": release_policy(config.release).name,
        "num_outputs": splits.info.num_outputs,
        "num_test_images": len(splits.test),
        "accuracy": float(per_image_accuracy.mean()),
        **measured,
        "label_only": floor,
        "confidence_intervals": {
            name: list(bootstrap_ci(values, seed=config.seed))
            for name, values in (("accuracy", per_image_accuracy), ("mse", per["mse"]),
                                 ("psnr_per_image", per["psnr"]), ("ssim", per["ssim"]),
                                 ("risk_exact", per["r_exact"]), ("risk_principal", per["r_principal"]))
        },
    }
    if correct.ndim == 2:
        names = splits.info.output_names
        metrics["accuracy_per_attribute"] = {n: float(a) for n, a in zip(names, correct.mean(dim=0))}
    metrics = significant(metrics)
    check_run_result(metrics, run.path / METRICS_FILE)  # what every reader expects (vicious.runs.results)
    if write:
        columns = {"accuracy": per_image_accuracy, **per,
                   **{f"{name}_label_only": floor_per[name] for name in ("psnr", "r_principal")}}
        if correct.ndim == 1:
            columns = {"label": labels, "predicted": logits.argmax(dim=1), **columns}
        atomic_write_json(run.path / METRICS_FILE, metrics)
        atomic_write_text(run.path / "per_sample.csv", _per_sample_csv(columns))
    return metrics


def evaluate_released(run: TrainedRun, policy: ReleasePolicy, *, decoder: torch.nn.Module | None = None,
                      statistics: ImageStatistics | None = None) -> dict:
    """The run's measures on its test split behind another release policy (and, with
    ``decoder``, another decoder of the released vector): ``{"measures": {accuracy, mse, psnr,
    ssim, risk, reidentification, ...}, "label_only": {...}}``, as in ``metrics.json``."""
    _, correct, (measured, _), (floor, _) = _measure(run, policy, decoder, statistics)
    per_image_accuracy = correct.mean(dim=1) if correct.ndim == 2 else correct
    return significant({"measures": {"accuracy": float(per_image_accuracy.mean()), **measured}, "label_only": floor})


def _measure(run: TrainedRun, policy: ReleasePolicy | None, decoder, statistics: ImageStatistics | None):
    """(outputs as log-odds or logits, per-image correctness, measures of G, measures of the
    label-only floor), each measure as (summary, per-image tensors)."""
    config, splits = run.config, run.splits
    statistics = statistics or fit_statistics(splits)
    x = splits.test.float_images()
    chosen = policy or release_policy(config.release)
    received, x_rec = reconstruct(run, splits.test.images, policy=chosen, decoder=decoder)
    # Accuracy and the label-only floor read the released vector as the service would.
    released = _receives_released(chosen, decoder)
    logits = log_odds(received, observed_form(config.output), splits.info.task) if released else received
    correct = accuracy(logits, splits.test.labels)
    fraction = config.evaluation.variance_fraction
    measured = reconstruction_measures(x, x_rec, statistics, fraction)
    floor = reconstruction_measures(x, label_only_decoder(splits)(logits), statistics, fraction)
    return logits, correct, measured, floor


def significant(value, digits: int = 7):
    """``value`` with every float rounded to ``digits`` significant digits, recursively.

    The measures are computed in float32, which holds about 7 digits; written as float64
    they would carry noise (0.8410000205039978 for an accuracy of 0.841)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: significant(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [significant(v, digits) for v in value]
    return value


def _per_sample_csv(columns: dict[str, torch.Tensor]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", *columns])
    for i, row in enumerate(zip(*(c.tolist() for c in columns.values()))):
        writer.writerow([i, *(v if isinstance(v, int) else f"{v:.6g}" for v in row)])
    return out.getvalue()
