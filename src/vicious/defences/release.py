"""Release policies: what a user does to the outputs before they leave the device.

A policy maps the classifier's outputs ``(N, K)``, in the form the server observes
(``"logits"`` or ``"probabilities"``), to the released vector of the same form and
shape. Every policy keeps the top-1 class except noise (which may flip it).

| policy | logits | probabilities |
|---|---|---|
| ``none`` | unchanged | unchanged |
| ``top-k`` | others set to the k-th largest logit - ``logit_gap`` (10) | others set to ``fill`` (0) |
| ``label-only`` | one-hot of the predicted class | the same |
| ``round-d`` | values rounded to d decimals | the same |
| ``temperature-t`` | logits / t | softmax(log p / t) |
| ``gaussian-s``, ``laplace-s`` | additive noise of scale s | the same (not clipped) |

For multi-attribute outputs, ``label-only`` releases the binarised attributes and
``temperature`` divides each attribute's logit; ``top-k`` is for classes only.
``parse_policy("top-3")`` builds a policy from its name.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from vicious.data.types import Task
from vicious.defences.outputs import Form, check_outputs, label_features, log_odds


class ReleasePolicy(ABC):
    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def apply(self, outputs: torch.Tensor, form: Form, task: Task, generator: torch.Generator | None) -> torch.Tensor: ...

    def __call__(
        self, outputs: torch.Tensor, form: Form, task: Task = "multiclass", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The released ``(N, K)`` vector for outputs ``(N, K)`` of the given form."""
        if form not in ("logits", "probabilities"):
            raise ValueError(f"form must be 'logits' or 'probabilities', got {form!r}")
        return self.apply(check_outputs(outputs), form, task, generator)


@dataclass(frozen=True)
class Identity(ReleasePolicy):
    name = "none"

    def apply(self, outputs, form, task, generator):
        return outputs


@dataclass(frozen=True)
class TopK(ReleasePolicy):
    k: int
    fill: float = 0.0
    logit_gap: float = 10.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"top-k needs k >= 1, got {self.k}")

    @property
    def name(self) -> str:
        return f"top-{self.k}"

    def apply(self, outputs, form, task, generator):
        if task == "multilabel":
            raise ValueError("top-k applies to classes; for attributes use label-only, rounding or noise")
        k = min(self.k, outputs.shape[1])
        values, index = outputs.topk(k, dim=1)
        # Logits: a fixed gap below the k-th largest value carries nothing beyond the kept
        # ones and keeps the predicted class on top (e^-10: a probability near 0).
        fill = values[:, -1:] - self.logit_gap if form == "logits" else torch.full_like(values[:, -1:], self.fill)
        return fill.expand_as(outputs).clone().scatter_(1, index, values)


@dataclass(frozen=True)
class LabelOnly(ReleasePolicy):
    name = "label-only"

    def apply(self, outputs, form, task, generator):
        return label_features(outputs, form, task)


@dataclass(frozen=True)
class Rounding(ReleasePolicy):
    decimals: int

    def __post_init__(self) -> None:
        if self.decimals < 0:
            raise ValueError(f"rounding needs decimals >= 0, got {self.decimals}")

    @property
    def name(self) -> str:
        return f"round-{self.decimals}"

    def apply(self, outputs, form, task, generator):
        return outputs.round(decimals=self.decimals)


@dataclass(frozen=True)
class Temperature(ReleasePolicy):
    temperature: float

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    @property
    def name(self) -> str:
        return f"temperature-{self.temperature:g}"

    def apply(self, outputs, form, task, generator):
        if form == "logits":
            return outputs / self.temperature
        scaled = log_odds(outputs, form, task) / self.temperature
        return torch.sigmoid(scaled) if task == "multilabel" else torch.softmax(scaled, dim=1)


@dataclass(frozen=True)
class Noise(ReleasePolicy):
    kind: str
    scale: float

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "laplace"):
            raise ValueError(f"noise kind must be 'gaussian' or 'laplace', got {self.kind!r}")
        if not self.scale >= 0:
            raise ValueError(f"noise scale must be >= 0, got {self.scale}")

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.scale:g}"

    def apply(self, outputs, form, task, generator):
        if self.kind == "gaussian":
            noise = torch.randn(outputs.shape, generator=generator)
        else:  # Laplace(0, 1) as the difference of two unit exponentials
            u = torch.rand((2, *outputs.shape), generator=generator).clamp_min(1e-12)
            noise = u[0].log() - u[1].log()
        return outputs + self.scale * noise.to(outputs.device, outputs.dtype)


_PATTERNS = [
    (r"none", lambda m: Identity()),
    (r"top-(\d+)", lambda m: TopK(int(m[1]))),
    (r"label-only", lambda m: LabelOnly()),
    (r"round-(\d+)", lambda m: Rounding(int(m[1]))),
    (r"temperature-([0-9.eE+-]+)", lambda m: Temperature(float(m[1]))),
    (r"(gaussian|laplace)-([0-9.eE+-]+)", lambda m: Noise(m[1], float(m[2]))),
]


def parse_policy(text: str) -> ReleasePolicy:
    """``"top-3"``, ``"label-only"``, ``"round-2"``, ``"temperature-0.5"``, ``"gaussian-0.05"``, ``"none"``."""
    for pattern, build in _PATTERNS:
        match = re.fullmatch(pattern, text.strip())
        if match:
            try:
                return build(match)
            except ValueError as err:
                raise ValueError(f"release policy {text!r}: {err}") from None
    raise ValueError(
        f"unknown release policy {text!r}; use none, top-K, label-only, round-D, temperature-T, gaussian-S or laplace-S"
    )
