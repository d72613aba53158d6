"""The honest reference zoo: what honest classifiers' outputs look like.

An audit compares a classifier's scores with those of honest classifiers. Honest
models differ by architecture and recipe (a short training, label smoothing, weight
decay, SGD or Adam, augmentation), and so do their scores: thresholds from one recipe
call honest models of another "vicious" or "inconclusive". The zoo therefore spans
four families (WideResNet-10-1, a plain CNN, a small ResNet, an MLP) and six recipe
traits, and releases logits from half its members and probabilities from the other.

:func:`train_reference` is a plain cross-entropy loop (binary cross-entropy for
multilabel tasks) with seeded initialisation and batch order; batch 64, AdamW at
1e-3 or SGD with Nesterov momentum at 0.05, a one-cycle schedule, bf16 autocast where
the CPU computes bf16 natively. A zoo of the default eight trains in about two minutes
on 5,000 images on 2 CPU cores.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as nnf
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vicious.data.perturbations import shift
from vicious.data.types import DatasetInfo
from vicious.defences.black_box import BlackBox
from vicious.models import create_model
from vicious.release.outputs import Form
from vicious.seeding import generator, seeded_initialisation

ARCHITECTURES = ("wrn-10-1", "cnn", "resnet", "mlp")
BATCH_SIZE = 64


class ZooMember(BaseModel):
    """One honest reference: an architecture, a recipe and the form of its outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    architecture: Literal["wrn-10-1", "cnn", "resnet", "mlp"]
    optimiser: Literal["adam", "sgd"] = "adam"
    epochs: int = Field(4, ge=1, le=100)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = Field(False, description="random horizontal flips and shifts of up to 2 pixels")
    form: Form = "logits"
    seed: int = Field(1, ge=0)


def _member(name: str, architecture: str, optimiser: str, epochs: int, ls: float, wd: float, augment: bool,
            form: Form, seed: int) -> ZooMember:
    return ZooMember(name=name, architecture=architecture, optimiser=optimiser, epochs=epochs, label_smoothing=ls,
                     weight_decay=wd, augment=augment, form=form, seed=seed)


DEFAULT_ZOO: tuple[ZooMember, ...] = (
    _member("wrn-adam", "wrn-10-1", "adam", 4, 0.0, 0.0, False, "logits", 1),
    _member("wrn-sgd-wd-aug", "wrn-10-1", "sgd", 4, 0.0, 5e-4, True, "probabilities", 2),
    _member("cnn-adam-smooth", "cnn", "adam", 4, 0.1, 0.0, False, "probabilities", 3),
    _member("cnn-sgd-wd-aug", "cnn", "sgd", 4, 0.0, 5e-4, True, "logits", 4),
    _member("resnet-adam-aug", "resnet", "adam", 4, 0.0, 0.0, True, "logits", 5),
    _member("resnet-sgd-wd", "resnet", "sgd", 3, 0.0, 5e-4, False, "probabilities", 6),
    _member("mlp-adam", "mlp", "adam", 6, 0.0, 0.0, False, "logits", 7),
    _member("mlp-adam-smooth-short", "mlp", "adam", 2, 0.1, 1e-4, False, "probabilities", 8),
)


def build_network(member: ZooMember, info: DatasetInfo, image_size: int, mean, std) -> nn.Module:
    common = {"in_channels": info.channels, "num_outputs": info.num_outputs, "mean": tuple(mean), "std": tuple(std)}
    if member.architecture == "wrn-10-1":
        return create_model("wrn-classifier", depth=10, width=1, **common)
    if member.architecture == "mlp":
        return create_model("reference-mlp", image_size=image_size, **common)
    return create_model(f"reference-{member.architecture}", **common)


def _augment(images: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), generator=draws) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=draws))
    return shift(images, dx, dy)


def train_reference(member: ZooMember, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
                    image_size: int, *, batch_size: int = BATCH_SIZE, bf16: bool = False) -> nn.Module:
    """An honest classifier trained by ``member``'s recipe on ``images`` (N, C, S, S) in [0, 1]
    and ``labels`` (int64 (N,), or float (N, K) for multilabel tasks); returned in eval mode."""
    mean = images.mean(dim=(0, 2, 3)).tolist()
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    with seeded_initialisation(member.seed):
        network = build_network(member, info, image_size, mean, std)
    if member.optimiser == "sgd":
        optimiser: torch.optim.Optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9,
                                                           nesterov=True, weight_decay=member.weight_decay)
    else:
        optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=member.weight_decay)
    steps = member.epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=optimiser.param_groups[0]["lr"],
                                                   total_steps=steps, pct_start=0.15)
    draws = generator(member.seed)
    network.train()
    for _ in range(member.epochs):
        order = torch.randperm(len(images), generator=draws)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            x, y = images[index], labels[index]
            if member.augment:
                x = _augment(x, draws)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = network(x).float()
            if info.task == "multilabel":
                loss = nnf.binary_cross_entropy_with_logits(logits, y.float())
            else:
                loss = nnf.cross_entropy(logits, y, label_smoothing=member.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return network.eval()


class Released(nn.Module):
    """A reference as its users see it: logits, or probabilities (softmax; sigmoid per attribute)."""

    def __init__(self, network: nn.Module, form: Form, task: str) -> None:
        super().__init__()
        self.network, self.form, self.task = network, form, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        if self.form == "logits":
            return logits
        return torch.sigmoid(logits) if self.task == "multilabel" else logits.softmax(dim=1)


def reference_box(network: nn.Module, member: ZooMember, info: DatasetInfo, image_size: int) -> BlackBox:
    """The trained reference as the black box every detector sees."""
    return BlackBox.from_module(Released(network, member.form, info.task), info, image_size, form=member.form,
                                source=f"honest reference {member.name}")
