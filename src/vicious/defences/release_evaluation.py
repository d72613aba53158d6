"""How much a release policy costs the user and the server.

For one trained vicious pair (F, G) and one policy, on the test images:

* accuracy kept: top-1 accuracy of the released vector;
* distortion: the mean total variation ½·Σ|p − q| between the observed and the released
  probabilities (logits through softmax; released probability vectors read as they are), a
  distance every policy has (label-only's and top-k's KL are infinite);
* (a) the vicious decoder as trained, applied to the released vector;
* (b) the adaptive server: G fine-tuned on the released outputs of the server's own
  training images (the policy applied afresh to every batch), then applied to the
  released test vectors.

Reconstructions are measured with R on the principal subspace and PSNR of the
mean MSE (PSNR = 10·log10(1 / mean MSE), data range 1).

``release_arms`` measures a finished run the same way, with every measure of its
``metrics.json`` (accuracy, PSNR, SSIM, R, re-identification, the label-only floor), and
keeps the result in the run's ``release/<policy>.json``: arms (a) and (b) of the release
table, whose arm (c) is a run trained through the policy (``release.policy=...``).
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch
from torch import nn

from vicious.attack.objective import reconstruction_loss
from vicious.config.schema import LossConfig
from vicious.defences.purifier import fit_purifier, load_purifier, save_purifier
from vicious.defences.shadow import decode, fit_decoder, reconstruction_measures
from vicious.metrics import ImageStatistics, correct_predictions
from vicious.models import outputs_to_probabilities
from vicious.release.outputs import Form, observed_form, probabilities
from vicious.release.policies import ReleasePolicy
from vicious.runs.evaluation import evaluate_released
from vicious.runs.files import atomic_write_json, read_json
from vicious.runs.layout import open_run
from vicious.runs.locks import folder_lock
from vicious.seeding import generator


def observed_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of G that takes the vector the server observes (probabilities for a
    ``softmax`` decoder), so that released vectors reach it unchanged."""
    decoder = copy.deepcopy(decoder).eval()
    decoder.input_form = "raw"  # the softmax already happened on the device, before the policy
    return decoder


@torch.no_grad()
def observed_outputs(classifier: nn.Module, images: torch.Tensor, form: Form, task: str = "multiclass",
                     batch_size: int = 1000) -> torch.Tensor:
    """What the server observes for float images (N, C, S, S): logits, or probabilities."""
    classifier.eval()
    logits = torch.cat([classifier(images[s : s + batch_size]) for s in range(0, len(images), batch_size)])
    return outputs_to_probabilities(logits, task) if form == "probabilities" else logits


def total_variation(observed: torch.Tensor, released: torch.Tensor, form: Form) -> torch.Tensor:
    """``(N,)`` ½·Σ_k |p_k − q_k| between the probabilities of observed and released ``(N, K)`` vectors."""
    return 0.5 * (probabilities(observed, form) - probabilities(released, form)).abs().sum(dim=1)


def evaluate_policy(
    policy: ReleasePolicy,
    decoder: nn.Module,
    form: Form,
    *,
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    train: tuple[torch.Tensor, torch.Tensor],
    statistics: ImageStatistics,
    retrain_epochs: int = 2,
    loss: LossConfig | None = None,
    seed: int = 0,
    variance_fraction: float = 0.9,
) -> dict:
    """Accuracy kept and reconstruction measures against the trained and the retrained decoder.

    test: (observed outputs (N, K), images (N, C, S, S) in [0, 1], labels (N,)).
    train: the server's (observed outputs, images) for retraining.
    """
    loss = loss or LossConfig()
    outputs, images, labels = test
    released = policy(outputs, form, "multiclass", generator(seed))
    result = {"policy": policy.name, "accuracy": float(correct_predictions(released, labels).mean()),
              "distortion": float(total_variation(outputs, released, form).mean())}
    trained = observed_decoder(decoder)
    result["trained"] = reconstruction_measures(images, decode(trained, released), statistics, variance_fraction)
    retrained = fit_decoder(
        trained.train(), train[0], train[1], epochs=retrain_epochs, batch_size=250, lr=1e-3, seed=seed + 1,
        loss=partial(reconstruction_loss, alpha_huber=loss.alpha_huber, alpha_ssim=loss.alpha_ssim, huber_delta=loss.huber_delta),
        transform=lambda batch, generator: policy(batch, form, "multiclass", generator),
    )
    result["retrained"] = reconstruction_measures(images, decode(retrained, released), statistics, variance_fraction)
    return result


#: What ``release_arms`` keeps per policy; another value recomputes.
ARMS_FORMAT = "vicious.release-arms/1"


def release_arms(run_dir: Path, policy: ReleasePolicy, *, retrain_epochs: int = 2, name: str | None = None) -> dict:
    """Arms (a) and (b) for a finished run behind ``policy``: ``{"blind": ..., "retrained":
    ..., "label_only": ...}``, each with the measures of ``metrics.json`` and its accuracy.

    (b) fine-tunes a copy of G for ``retrain_epochs`` on the released outputs of the run's
    own training images (the policy drawn afresh each batch), as a server that learns of the
    policy after training would. Cached in ``RUN/release/<name>.json`` (``name``: the policy's
    by default), under the run's lock."""
    run_dir = Path(run_dir)
    name = name or policy.name
    cache = run_dir / "release" / f"{name}.json"
    wanted = {"format": ARMS_FORMAT, "policy": name, "retrain_epochs": retrain_epochs}
    if cache.is_file():
        saved = read_json(cache, what="release arms")
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in wanted.items()):
            return saved
    with folder_lock(run_dir):
        run = open_run(run_dir)
        config, splits = run.config, run.splits
        form = observed_form(config.output)
        blind = evaluate_released(run, policy)
        images = splits.train.float_images()
        server = observed_outputs(run.classifier, images, form, splits.info.task)
        decoder = fit_decoder(
            observed_decoder(run.decoder).train(), server, images, epochs=retrain_epochs,
            batch_size=config.train.batch_size, lr=config.train.lr, seed=config.seed + 1,
            loss=partial(reconstruction_loss, alpha_huber=config.loss.alpha_huber, alpha_ssim=config.loss.alpha_ssim,
                         huber_delta=config.loss.huber_delta),
            transform=lambda batch, draws: policy(batch, form, splits.info.task, draws),
        )
        retrained = evaluate_released(run, policy, decoder=decoder)
        result = {**wanted, "blind": blind["measures"], "retrained": retrained["measures"],
                  "label_only": blind["label_only"]}
        atomic_write_json(cache, result)
    return result


def purifier_arms(run_dir: Path, distortion_weight: float, *, epochs: int = 50, retrain_epochs: int = 2) -> dict:
    """``release_arms`` behind a user's purifier (``vicious.defences.purifier``) fitted with
    ``distortion_weight`` on the run's validation images, which stand in for the user's own
    (the measures are taken on the test images). The purifier is kept beside the arms, in
    ``RUN/release/purifier-<W>.safetensors``."""
    run_dir = Path(run_dir)
    name = f"purifier-{distortion_weight:g}"
    path = run_dir / "release" / f"{name}.safetensors"
    if path.is_file():
        purifier = load_purifier(path)
    else:
        run = open_run(run_dir)
        form = observed_form(run.config.output)
        images = run.splits.val.float_images()
        outputs = observed_outputs(run.classifier, images, form, run.splits.info.task)
        purifier = fit_purifier(outputs, images, form, run.splits.info.task, epochs=epochs, seed=run.config.seed,
                                distortion_weight=distortion_weight)
        path.parent.mkdir(exist_ok=True)
        save_purifier(purifier, path)
    return release_arms(run_dir, purifier, retrain_epochs=retrain_epochs, name=name)
