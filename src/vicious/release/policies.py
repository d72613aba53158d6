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
``parse_policy("top-3")`` builds a policy from its name, ``release_policy(config.release)``
from a run's config.

A server that knows the policy trains F and G through it (``for_training``): top-k,
temperature and noise pass their own gradients (noise is reparameterised: x + s·ε with ε
drawn apart from x). Rounding and label-only, whose gradient is zero almost everywhere, go
straight through (the forward value is the release; Bengio et al. 2013, arXiv 1308.3432):
rounding with the identity's gradient, label-only with the softmax's (a sigmoid's per
attribute), the smooth function the one-hot approximates, as straight-through
Gumbel-softmax does (Jang et al. 2017, arXiv 1611.01144). The identity's would push every
logit by what the decoder wants of each class's one-hot entry, against the task: measured,
it cost a vicious pair trained through label-only most of its accuracy.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from vicious.config.schema import ReleaseConfig
from vicious.data.types import Task
from vicious.models import outputs_to_probabilities
from vicious.release.outputs import Form, check_outputs, label_features, log_odds, observed_form


class ReleasePolicy(ABC):
    #: Whether ``apply`` has a useful gradient of its own; else training goes straight through.
    differentiable: ClassVar[bool] = False

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    def family(self) -> str:
        """The policy without its parameter (``top-3`` -> ``top-k``): one table and plot each."""
        return self.name

    @abstractmethod
    def apply(self, outputs: torch.Tensor, form: Form, task: Task, generator: torch.Generator | None) -> torch.Tensor: ...

    def __call__(
        self, outputs: torch.Tensor, form: Form, task: Task = "multiclass", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The released ``(N, K)`` vector for outputs ``(N, K)`` of the given form."""
        if form not in ("logits", "probabilities"):
            raise ValueError(f"form must be 'logits' or 'probabilities', got {form!r}")
        return self.apply(check_outputs(outputs), form, task, generator)

    def for_training(
        self, outputs: torch.Tensor, form: Form, task: Task = "multiclass", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The released ``(N, K)`` vector with a gradient for a server training through the policy
        (module docstring); no checks, no synchronisation with the device."""
        released = self.apply(outputs, form, task, generator)
        return released if self.differentiable else outputs + (released - outputs).detach()


@dataclass(frozen=True)
class Identity(ReleasePolicy):
    name = "none"
    differentiable = True

    def apply(self, outputs, form, task, generator):
        return outputs


@dataclass(frozen=True)
class TopK(ReleasePolicy):
    k: int
    fill: float = 0.0
    logit_gap: float = 10.0
    differentiable = True  # through the kept values (and, for logits, the fill below them)
    family = "top-k"

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

    def for_training(self, outputs, form, task="multiclass", generator=None):
        released = self.apply(outputs, form, task, generator)
        smooth = outputs if form == "probabilities" else outputs_to_probabilities(outputs, task)
        return released + (smooth - smooth.detach())


@dataclass(frozen=True)
class Rounding(ReleasePolicy):
    decimals: int
    family = "round-d"

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
    differentiable = True
    family = "temperature"

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
    differentiable = True  # reparameterised: the noise is drawn apart from the outputs

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "laplace"):
            raise ValueError(f"noise kind must be 'gaussian' or 'laplace', got {self.kind!r}")
        if not self.scale >= 0:
            raise ValueError(f"noise scale must be >= 0, got {self.scale}")

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.scale:g}"

    @property
    def family(self) -> str:
        return self.kind

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


def release_policy(config: ReleaseConfig) -> ReleasePolicy:
    """The policy a run's ``release`` section names (``release.policy=topk release.k=3``: top-3)."""
    builders = {
        "none": Identity,
        "topk": lambda: TopK(config.k),
        "label-only": LabelOnly,
        "round": lambda: Rounding(config.decimals),
        "temperature": lambda: Temperature(config.temperature),
        "gaussian": lambda: Noise("gaussian", config.scale),
        "laplace": lambda: Noise("laplace", config.scale),
    }
    return builders[config.policy]()


def released_outputs(
    policy: ReleasePolicy, logits: torch.Tensor, output: str, task: Task = "multiclass",
    generator: torch.Generator | None = None, *, training: bool = False,
) -> torch.Tensor:
    """What the server receives for F's logits ``(N, K)``: the form a run's ``output`` names
    (``raw``: logits, ``softmax``: probabilities) after ``policy``; with ``training``, with the
    gradient of ``for_training``. A decoder takes it through ``forward_observed``."""
    form = observed_form(output)
    observed = outputs_to_probabilities(logits, task) if form == "probabilities" else logits
    if training:
        return policy.for_training(observed, form, task, generator)
    return policy(observed, form, task, generator)
