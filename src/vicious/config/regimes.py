"""The regimes (docs/method.md, "Regimes"): what honest, vicious and autoencoder mean, in one place.

A regime is a sequence of training phases and the loss weights it needs. Each phase trains
some of the two networks and selects its epoch by a validation score:

| phase        | trains       | selection score (minimised)                              |
|--------------|--------------|----------------------------------------------------------|
| ``joint``    | F and G      | (1 − accuracy) + reconstruction; reconstruction alone when beta_c = 0 |
| ``classifier`` | F          | 1 − accuracy                                             |
| ``decoder``  | G on frozen F | reconstruction                                          |

with reconstruction = alpha_ssim·(1 − SSIM) + alpha_huber·MSE on the validation split.
This module is the only place those facts are written; the config validates against it,
the presets start from it, training runs its phases (``vicious.attack`` implements them),
and the tables order their rows by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["joint", "classifier", "decoder"]

# What each phase trains: (F, G).
PHASE_TRAINS: dict[Phase, tuple[bool, bool]] = {"joint": (True, True), "classifier": (True, False),
                                                 "decoder": (False, True)}


@dataclass(frozen=True)
class Regime:
    """One regime.

    Attributes:
        name: as in the config's ``regime``.
        meaning: one line, for presets and pages.
        phases: trained in this order, each resumable.
        loss: the loss weights its presets set (over the defaults).
        task: whether the task loss must be on (``loss.beta_c > 0``: True), off (``= 0``:
            False), or either (None, for a regime whose phases do not mix the two losses).
        reconstructs: whether the regime trains G with F (``loss.beta_r > 0`` required).
    """

    name: str
    meaning: str
    phases: tuple[Phase, ...]
    loss: Mapping[str, float] = field(default_factory=dict)
    task: bool | None = None
    reconstructs: bool = True

    def check(self, beta_c: float, beta_r: float) -> None:
        """Refuse loss weights that contradict the regime (a ValueError naming the fix)."""
        if self.task is False and beta_c != 0:
            raise ValueError(f"the {self.name} regime trains without the task: set loss.beta_c=0")
        if self.task and (beta_c == 0 or beta_r == 0):
            raise ValueError(f"the {self.name} regime needs loss.beta_c > 0 and loss.beta_r > 0")
        if self.reconstructs and beta_r == 0:
            raise ValueError(f"the {self.name} regime needs loss.beta_r > 0")


REGIMES: dict[str, Regime] = {r.name: r for r in (
    Regime("honest", "F for the task only, then a post-hoc decoder on frozen F", ("classifier", "decoder"),
           reconstructs=False),
    Regime("vicious", "F and G trained jointly (the attack)", ("joint",), task=True),
    Regime("autoencoder", "F and G for reconstruction only (upper bound)", ("joint",), {"beta_c": 0.0}, task=False),
)}
REGIME_NAMES = tuple(REGIMES)  # the order of rows in tables and pages


def selection_terms(phase: Phase, beta_c: float) -> tuple[bool, bool]:
    """Whether a phase's validation score counts (1 − accuracy), and the reconstruction error."""
    if phase == "classifier":
        return True, False
    if phase == "decoder" or beta_c == 0:
        return False, True
    return True, True
