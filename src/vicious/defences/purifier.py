"""Fitting a user-side purifier (:class:`vicious.release.purifier.Purifier`) on the user's own images.

After Yang et al. 2020, "Defending Model Inversion and Membership Inference Attacks via
Prediction Purification" (arXiv 2005.03915). On the user's (outputs, images), every batch
alternates

(i) the *inversion decoder* (a shadow decoder, :func:`vicious.defences.shadow.shadow_decoder`)
    one Adam step on the MSE of the images it rebuilds from the purified outputs, the purifier
    fixed;
(ii) the *purifier* one Adam step on

        - reconstruction gain  +  label_weight · CE(u, original label)
                               +  distortion_weight · KL(p_original || p_purified)

    against that decoder, fixed. The reconstruction gain is the decoder's improvement over
    the mean image, per image and clipped at 0: a purifier that maximised the decoder's error
    without bound would steer it towards anti-images, which carry the image as well as the
    image does (a fresh decoder reads them); pushing a sample no further than "no better than
    the mean" does not teach that (on the toy problem of the tests the two fitted alike). The
    distortion (``distortion_weight``) is the utility knob: 0 lets the purifier move the
    outputs as far as the label margin allows.

The label is kept by construction (the purifier's margin), so the cross-entropy only makes the
purified outputs more confident, a rescaling that keeps what they encode; it is off by default
(``label_weight=0``: on the toy problem of the tests, at distortion weight 0 and 30 epochs,
weight 1 left a fresh decoder 1 to 1.6 dB more PSNR). Small batches (32) give the alternation
more steps on a user's few images (on that problem 0.8 dB less PSNR than batches of 128).
:func:`save_purifier` / :func:`load_purifier` ship a fitted purifier as safetensors (never a
pickle).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as nnf

from vicious.data.types import Task
from vicious.defences.shadow import mse_loss, shadow_decoder
from vicious.release.outputs import Form, check_outputs, predicted_labels
from vicious.release.purifier import Purifier
from vicious.runs.checkpoints import UnsafeFileError, load_weights, read_safetensors_metadata, save_weights
from vicious.seeding import generator, seeded_initialisation

PURIFIER_KIND = "vicious-purifier"
_MAX_UNITS = 100_000  # K or hidden units beyond any classifier's outputs: a damaged or hostile header


def distortion(original: torch.Tensor, released: torch.Tensor, form: Form, task: Task = "multiclass") -> torch.Tensor:
    """``(N,)`` KL(p_original || p_released) in nats, for outputs ``(N, K)`` of one form (the sum
    of the attributes' Bernoulli KLs for multilabel). Differentiable in ``released``."""
    return _kl(_log_probabilities(original, form, task), _log_probabilities(released, form, task))


def _log_probabilities(outputs: torch.Tensor, form: Form, task: Task) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log p, log(1 - p) per attribute or None): from logits without the underflow of log(softmax)."""
    if form == "probabilities":
        tiny = torch.finfo(torch.float32).tiny
        complement = (1 - outputs).clamp_min(tiny).log() if task == "multilabel" else None
        return outputs.clamp_min(tiny).log(), complement
    if task == "multilabel":
        return nnf.logsigmoid(outputs), nnf.logsigmoid(-outputs)
    return torch.log_softmax(outputs, dim=1), None


def _kl(p: tuple[torch.Tensor, torch.Tensor | None], q: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    kl = p[0].exp() * (p[0] - q[0])
    if p[1] is not None and q[1] is not None:
        kl = kl + p[1].exp() * (p[1] - q[1])
    return kl.sum(dim=1)


def fit_purifier(
    outputs: torch.Tensor,
    images: torch.Tensor,
    form: Form,
    task: Task = "multiclass",
    *,
    epochs: int,
    seed: int,
    distortion_weight: float,
    label_weight: float = 0.0,
    hidden: int | None = None,
    margin: float = 0.1,
    decoder: str = "mlp",
    decoder_hidden: int = 256,
    batch_size: int = 32,
    lr: float = 1e-3,
) -> Purifier:
    """A :class:`Purifier` fitted on the user's outputs ``(N, K)`` (of ``form``) and their images
    ``(N, C, S, S)`` in [0, 1] against an inversion decoder trained alongside (module docstring).

    ``decoder``: the inversion decoder's kind (``"mlp"`` or ``"conv"``, ``decoder_hidden``
    units for the MLP). Deterministic for a given ``seed`` (initialisation and batch order).
    Returns the purifier in eval mode; the inversion decoder is discarded (judge the purifier
    with a decoder trained afresh on its outputs: ``evaluate_policy``).
    """
    outputs = check_outputs(outputs)
    if images.ndim != 4 or len(images) != len(outputs):
        raise ValueError(f"images must be (N, C, S, S) with N = {len(outputs)} (one per output row), "
                         f"got {tuple(images.shape)}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not (distortion_weight >= 0 and label_weight >= 0):
        raise ValueError(f"distortion_weight and label_weight must be >= 0, got {distortion_weight}, {label_weight}")
    images = images.float()
    with seeded_initialisation(seed):
        purifier = Purifier(outputs.shape[1], hidden, margin)
        channels, height, width = images.shape[1:]
        inverter = shadow_decoder(decoder, outputs.shape[1], (channels, height, width), decoder_hidden)
    labels = predicted_labels(outputs, form, task)
    # The mean image's error per image: what the decoder would reach if the outputs told it nothing.
    floor = (images - images.mean(dim=0, keepdim=True)).pow(2).flatten(1).mean(dim=1)
    decoder_optimiser = torch.optim.Adam(inverter.parameters(), lr=lr)
    purifier_optimiser = torch.optim.Adam(purifier.net.parameters(), lr=lr)
    draws = generator(seed)
    purifier.net.train()
    for _ in range(epochs):
        order = torch.randperm(len(outputs), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch, targets = outputs[index], images[index]
            # (i) the inversion decoder on what the purifier releases now
            with torch.no_grad():
                features = purifier.purified_log_odds(batch, form, task)
            inverter.train()
            decoder_loss = mse_loss(inverter(features), targets)
            decoder_optimiser.zero_grad(set_to_none=True)
            decoder_loss.backward()
            decoder_optimiser.step()
            # (ii) the purifier against that decoder
            inverter.eval()
            u = purifier.purified_log_odds(batch, form, task)
            error = (inverter(u) - targets).pow(2).flatten(1).mean(dim=1)
            gain = (floor[index] - error).clamp_min(0).mean()
            label_loss = (nnf.binary_cross_entropy_with_logits(u, labels[index]) if task == "multilabel"
                          else nnf.cross_entropy(u, labels[index]))
            moved = _kl(_log_probabilities(batch, form, task), _log_probabilities(u, "logits", task)).mean()
            loss = gain + label_weight * label_loss + distortion_weight * moved
            purifier_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            purifier_optimiser.step()
    purifier.net.eval()
    return purifier


def save_purifier(purifier: Purifier, path: str | Path) -> None:
    """Write a purifier as safetensors: its network's weights, and its shape and margin as metadata."""
    save_weights(purifier.net, Path(path), metadata={
        "kind": PURIFIER_KIND, "num_outputs": str(purifier.num_outputs), "hidden": str(purifier.hidden),
        "margin": repr(purifier.margin),
    })


def load_purifier(path: str | Path) -> Purifier:
    """The purifier :func:`save_purifier` wrote; refuses, in one line, anything else (a pickle,
    other weights, a damaged or oversized file). Reading runs no code: safetensors' own parser
    bounds the header, and the file is read whole only once its size fits the shape it records."""
    path = Path(path)
    try:
        metadata = read_safetensors_metadata(path)
    except UnsafeFileError:
        raise UnsafeFileError(f"{path} is not a purifier (not a safetensors file); load a file written by "
                              "save_purifier") from None
    if metadata.get("kind") != PURIFIER_KIND:
        raise UnsafeFileError(f"{path} is safetensors but not a purifier (no kind={PURIFIER_KIND!r} in its metadata); "
                              "load a file written by save_purifier")
    num_outputs, hidden = _units(metadata, "num_outputs", path), _units(metadata, "hidden", path)
    try:
        margin = float(metadata.get("margin", ""))
    except ValueError:
        margin = math.nan
    if not (math.isfinite(margin) and margin > 0):
        raise UnsafeFileError(f"{path} records margin {metadata.get('margin', '')[:40]!r}, not a positive number: "
                              "the file was altered; save the purifier again")
    # Weights are float32: (K·H + H) + (H·K + K) numbers; the header is small metadata.
    expected = 4 * (2 * num_outputs * hidden + hidden + num_outputs)
    if path.stat().st_size > expected + 2**16:
        raise UnsafeFileError(f"{path} is larger than a purifier of its recorded shape holds: the file was altered; "
                              "save the purifier again")
    purifier = Purifier(num_outputs, hidden, margin)
    load_weights(purifier.net, path)
    purifier.net.eval()
    return purifier


def _units(metadata: dict[str, str], key: str, path: Path) -> int:
    value = metadata.get(key, "")
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= _MAX_UNITS):
        raise UnsafeFileError(f"{path} records {key} {value[:40]!r}, not a whole number from 1 to {_MAX_UNITS}: "
                              "the file was altered; save the purifier again")
    return int(value)
