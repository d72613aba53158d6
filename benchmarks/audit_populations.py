"""Populations of classifiers trained *outside* vicious, for the audit benchmark.

Everything a model of these populations is, is defined here: four architectures
(a LeNet-style CNN, a small VGG, the authors' WideResNet-10-1 as a plain module,
an MLP), the recipes (Adam or SGD, epochs, label smoothing, weight decay, flip and
shift augmentation), the server's decoder and the training loops. vicious supplies
only the images. Each classifier is exported the way a server ships it (ONNX or
TorchScript, releasing logits or probabilities) and audited from that file.

Kinds of model:

* ``honest``: cross-entropy only;
* ``vicious``: F and a decoder G trained jointly, G reading the released outputs
  (logits, or the log of the probabilities);
* ``adaptive``: vicious plus beta_ent times the mean entropy of softmax(F(x)), which
  makes the outputs confident and honest-looking.

For every vicious or adaptive model, ``margin_db`` is the PSNR of its own decoder
minus that of an *honest post-hoc decoder*: the same decoder architecture and budget
trained on the outputs (same form) of an honest model of the same architecture and
population, both measured on the same test images. A model whose margin is small
leaks no more than an honest one, and missing it is no detection failure.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import nn

# --- architectures -----------------------------------------------------------------------------


def lenet(channels: int, k: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, k),
    )


def vgg(channels: int, k: int) -> nn.Module:
    def block(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
                nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(channels, 32), *block(32, 64), *block(64, 96),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, k))


def wrn(channels: int, k: int) -> nn.Module:
    from vicious.models import create_classifier  # the architecture only; trained by the loop below

    return create_classifier("wrn", depth=10, width=1, in_channels=channels, num_outputs=k)


def mlp(channels: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 32 * 32, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, k))


ARCHITECTURES = {"lenet": lenet, "vgg": vgg, "wrn": wrn, "mlp": mlp}


class Decoder(nn.Module):
    """The server's G: released outputs (K,) -> images (C, 32, 32); softmax outputs are read as log p."""

    def __init__(self, k: int, channels: int, output: str) -> None:
        super().__init__()
        self.output = output
        self.head = nn.Sequential(nn.BatchNorm1d(k), nn.Linear(k, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4), nn.ReLU())

        def up(a: int, b: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]

        self.body = nn.Sequential(*up(64, 64), *up(64, 32), *up(32, 16), nn.Conv2d(16, channels, 3, padding=1))

    def forward(self, released: torch.Tensor) -> torch.Tensor:
        x = released.clamp_min(1e-12).log() if self.output == "softmax" else released
        return torch.sigmoid(self.body(self.head(x).view(-1, 64, 4, 4)))


class Released(nn.Module):
    """What the server ships: images in [0, 1] -> logits (raw) or probabilities (softmax)."""

    def __init__(self, classifier: nn.Module, output: str) -> None:
        super().__init__()
        self.classifier, self.softmax = classifier, output == "softmax"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier((images - 0.5) / 0.25)
        return logits.softmax(dim=1) if self.softmax else logits


# --- members -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # honest, vicious, adaptive
    architecture: str
    output: str  # raw or softmax
    optimiser: str = "adam"
    epochs: int = 6
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    augment: bool = False
    beta_r: float = 0.0
    beta_ent: float = 0.0
    seed: int = 0


HONEST_RECIPES = [  # architecture, optimiser, epochs, label smoothing, weight decay, augment
    ("lenet", "adam", 6, 0.0, 0.0, False),
    ("lenet", "sgd", 6, 0.0, 5e-4, True),
    ("vgg", "adam", 4, 0.1, 0.0, False),
    ("vgg", "sgd", 4, 0.0, 5e-4, True),
    ("wrn", "adam", 4, 0.0, 0.0, False),
    ("wrn", "sgd", 4, 0.0, 5e-4, True),
    ("mlp", "adam", 8, 0.0, 0.0, False),
    ("mlp", "adam", 3, 0.1, 0.0, False),
]
VICIOUS = [  # kind, architecture, output, beta_R, beta_ent
    ("vicious", "lenet", "raw", 3.0, 0.0), ("vicious", "vgg", "raw", 1.0, 0.0),
    ("vicious", "wrn", "raw", 3.0, 0.0), ("vicious", "mlp", "raw", 3.0, 0.0),
    ("vicious", "lenet", "softmax", 3.0, 0.0), ("vicious", "vgg", "softmax", 3.0, 0.0),
    ("vicious", "wrn", "softmax", 3.0, 0.0),
    ("adaptive", "wrn", "raw", 3.0, 1.0), ("adaptive", "vgg", "raw", 3.0, 3.0),
    ("adaptive", "lenet", "softmax", 3.0, 1.0),
]
VICIOUS_EPOCHS = {"lenet": 6, "vgg": 5, "wrn": 5, "mlp": 8}


def population(index: int) -> list[Member]:
    """Population ``index`` (0 or 1): the same recipes, other seeds, honest output forms swapped."""
    seed = 1000 * (index + 1)
    members = [
        Member(f"honest-{i + 1}-{a}-{o}{'-aug' if aug else ''}", "honest", a, ("raw", "softmax")[(i + index) % 2], o, e,
               ls, wd, aug, seed=seed + i)
        for i, (a, o, e, ls, wd, aug) in enumerate(HONEST_RECIPES)
    ]
    members += [
        Member(f"{kind}-{i + 1}-{a}-{out}", kind, a, out, "adam", VICIOUS_EPOCHS[a], beta_r=br, beta_ent=be,
               seed=seed + 100 + i)
        for i, (kind, a, out, br, be) in enumerate(VICIOUS)
    ]
    return members


# --- training ----------------------------------------------------------------------------------


def augment(images: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 2 pixels (reflect padding)."""
    flip = torch.rand(len(images), generator=draws) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = nnf.pad(images, (2, 2, 2, 2), mode="reflect")
    dx, dy = (int(v) for v in torch.randint(0, 5, (2,), generator=draws))
    return padded[..., dy : dy + images.shape[-2], dx : dx + images.shape[-1]]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def released_features(logits: torch.Tensor, output: str) -> torch.Tensor:
    return logits.softmax(dim=1) if output == "softmax" else logits


def _optimiser(member: Member, parameters, steps: int):
    if member.optimiser == "sgd":
        opt = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, nesterov=True, weight_decay=member.weight_decay)
    else:
        opt = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=member.weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps,
                                                     pct_start=0.15)


def train_member(member: Member, images: torch.Tensor, labels: torch.Tensor, k: int, *, batch_size: int = 64,
                 bf16: bool = True) -> tuple[nn.Module, nn.Module | None]:
    """(classifier F on standardised images, the server's decoder G or None for honest models)."""
    torch.manual_seed(member.seed)
    draws = torch.Generator().manual_seed(member.seed)
    channels = images.shape[1]
    classifier = ARCHITECTURES[member.architecture](channels, k)
    decoder = Decoder(k, channels, member.output) if member.kind != "honest" else None
    parameters = list(classifier.parameters()) + (list(decoder.parameters()) if decoder else [])
    steps = member.epochs * math.ceil(len(images) / batch_size)
    optimiser, schedule = _optimiser(member, parameters, steps)
    classifier.train()
    if decoder:
        decoder.train()
    for _ in range(member.epochs):
        order = torch.randperm(len(images), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            x, y = images[index], labels[index]
            if member.augment:
                x = augment(x, draws)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = classifier((x - 0.5) / 0.25).float()
                loss = nnf.cross_entropy(logits, y, label_smoothing=member.label_smoothing)
                if decoder is not None:
                    rebuilt = decoder(released_features(logits, member.output)).float()
                    loss = loss + member.beta_r * 10 * nnf.mse_loss(rebuilt, x)
                    if member.beta_ent:
                        loss = loss + member.beta_ent * entropy(logits)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    classifier.eval()
    return classifier, decoder.eval() if decoder else None


def fit_post_hoc_decoder(classifier: nn.Module, output: str, images: torch.Tensor, *, epochs: int, seed: int,
                         batch_size: int = 64) -> nn.Module:
    """The honest post-hoc decoder: G trained on a frozen honest F's released outputs, with G's budget."""
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        released = torch.cat([released_features(classifier((images[s : s + 500] - 0.5) / 0.25), output)
                              for s in range(0, len(images), 500)])
    decoder = Decoder(released.shape[1], images.shape[1], output)
    steps = epochs * math.ceil(len(images) / batch_size)
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.15)
    decoder.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = 10 * nnf.mse_loss(decoder(released[index]), images[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return decoder.eval()


@torch.no_grad()
def decoder_psnr(classifier: nn.Module, decoder: nn.Module, output: str, images: torch.Tensor) -> float:
    """PSNR (dB) of the mean MSE of G(released F(x)) over ``images``."""
    errors = []
    for s in range(0, len(images), 500):
        x = images[s : s + 500]
        errors.append(((decoder(released_features(classifier((x - 0.5) / 0.25), output)) - x) ** 2).flatten(1).mean(1))
    return float(-10 * torch.log10(torch.cat(errors).mean()))


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([classifier((images[s : s + 500] - 0.5) / 0.25).argmax(1) for s in range(0, len(images), 500)])
    return float((predicted == labels).float().mean())


def export(classifier: nn.Module, output: str, path: Path, channels: int) -> Path:
    """The shipped file: ONNX (one file) for ``.onnx``, TorchScript otherwise."""
    released = Released(classifier, output).eval()
    example = torch.rand(2, channels, 32, 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".onnx":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(released, (example,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
                              input_names=["images"], verbose=False)
    else:
        torch.jit.trace(released, example).save(str(path))
    return path


def build_population(index: int, folder: Path, train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor, k: int, echo=print) -> list[dict]:
    """Train (or reuse) population ``index`` in ``folder``; one record per member (model file, accuracy,
    decoder PSNR and margin over the honest post-hoc decoder)."""
    folder.mkdir(parents=True, exist_ok=True)
    channels = train_images.shape[1]
    records, honest_models = [], {}
    for i, member in enumerate(population(index)):
        record_file = folder / f"{member.name}.json"
        suffix = ".onnx" if i % 2 == 0 else ".pt"
        model_file = folder / f"{member.name}{suffix}"
        weights = folder / f"{member.name}.weights.pt"  # this benchmark's own files: plain state dicts
        if record_file.exists() and weights.exists():
            record = json.loads(record_file.read_text())
            classifier = ARCHITECTURES[member.architecture](channels, k)
            classifier.load_state_dict(torch.load(weights, weights_only=True))
            classifier.eval()
        else:
            start = time.perf_counter()
            classifier, decoder = train_member(member, train_images, train_labels, k)
            record = {**asdict(member), "model_file": model_file.name, "train_seconds": time.perf_counter() - start,
                      "accuracy": accuracy(classifier, test_images, test_labels)}
            if decoder is not None:
                record["decoder_psnr"] = decoder_psnr(classifier, decoder, member.output, test_images)
            export(classifier, member.output, model_file, channels)
            torch.save(classifier.state_dict(), weights)
            record_file.write_text(json.dumps(record, indent=1))
        if member.kind == "honest" and member.optimiser == "adam" and member.architecture not in honest_models:
            honest_models[member.architecture] = (classifier, member)
        echo(f"  {member.name}: accuracy {record['accuracy']:.3f}"
             + (f", decoder {record['decoder_psnr']:.2f} dB" if "decoder_psnr" in record else "")
             + f" ({record['train_seconds']:.0f} s)")
        records.append(record)
    # The honest post-hoc baselines: per architecture and output form, cached.
    baseline_file = folder / "post_hoc_decoders.json"
    baselines = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
    for record in records:
        if record["kind"] == "honest":
            continue
        key = f"{record['architecture']}-{record['output']}"
        if key not in baselines:
            classifier, member = honest_models[record["architecture"]]
            decoder = fit_post_hoc_decoder(classifier, record["output"], train_images, epochs=record["epochs"],
                                           seed=member.seed)
            baselines[key] = decoder_psnr(classifier, decoder, record["output"], test_images)
            baseline_file.write_text(json.dumps(baselines, indent=1))
        record["post_hoc_psnr"] = baselines[key]
        record["margin_db"] = record["decoder_psnr"] - baselines[key]
    return records


def members_of(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["kind"] == kind]

