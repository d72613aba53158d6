"""Where a phase's training and validation values are logged: ``train.logger``.

The CSV log (``RUN/logs/<phase>/version_N/metrics.csv``) is always written: the demo's
and the sweep report's training curves are drawn from it, and it needs no package.
``train.logger`` adds one of the loggers Lightning users know, each an optional
dependency:

| ``train.logger`` | writes                                         | install           |
|------------------|------------------------------------------------|-------------------|
| ``csv``          | the CSV log only (default)                     | (built in)        |
| ``tensorboard``  | event files under ``RUN/logs/tensorboard/<phase>/`` (``tensorboard --logdir RUN/logs/tensorboard``) | ``pip install tensorboard`` |
| ``wandb``        | a Weights & Biases run (``WANDB_MODE=offline`` keeps it local, under ``RUN/logs``) | ``pip install wandb`` |
| ``mlflow``       | an MLflow run, to ``MLFLOW_TRACKING_URI`` or else the SQLite store ``RUN/logs/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///RUN/logs/mlflow.db``) | ``pip install mlflow`` |

Every logger gets the same values: the training loss every ``train.log_every_n_steps``
optimiser steps (``train/loss_step``), and per epoch the training losses and the
validation measures.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vicious.config.schema import ConfigError

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

# train.logger -> (the modules Lightning's logger needs, any one of them; the package to install)
_NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}


def check_logger(name: str) -> None:
    """Refuse, in one line, a logger whose package is not installed (before anything trains)."""
    if name in _NEEDS:
        modules, package = _NEEDS[name]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise ConfigError(f"train.logger={name} needs the {package} package: pip install {package} "
                              "(or set train.logger=csv)")


def phase_loggers(name: str, run_dir: Path, phase: str, run_name: str) -> list[Logger]:
    """The CSV logger of ``phase`` and, unless ``name`` is csv, the logger it names (whose
    package ``check_logger`` found).

    Each session of a resumed run logs to a new ``version_N``, so resuming never
    overwrites what an earlier session logged."""
    from lightning.pytorch.loggers import CSVLogger

    logs = run_dir / "logs"
    loggers: list[Logger] = [CSVLogger(logs, name=phase)]
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(logs / "tensorboard", name=phase, default_hp_metric=False))
    elif name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(name=f"{run_name}/{phase}", save_dir=str(logs), project="vicious"))
    elif name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        # MLflow 3 refuses a plain folder as its store (kept only in maintenance mode): a SQLite file.
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(logs / 'mlflow.db').resolve()}"
        loggers.append(MLFlowLogger(experiment_name="vicious", run_name=f"{run_name}/{phase}", tracking_uri=uri))
    return loggers


@dataclass
class TrainingLog:
    """A phase's logged values: per epoch (``{"epoch": 1, "val/ssim": ...}``, epochs from 1)
    and the training loss per logged step (``(step, loss)``, steps from 1)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)


def read_training_log(run_dir: Path, phase: str) -> TrainingLog:
    """The CSV log of ``phase``, every session of a resumed run in order (a later session's
    value for an epoch or step replaces an earlier one's)."""
    epochs: dict[int, dict[str, float]] = {}
    steps: dict[int, float] = {}
    for path in sorted((Path(run_dir) / "logs" / phase).glob("version_*/metrics.csv"),
                       key=lambda p: int(p.parent.name.removeprefix("version_") or 0)):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    values = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
                except ValueError:  # a line cut short by a kill
                    continue
                if "train/loss_step" in values and "step" in values:
                    steps[int(values["step"]) + 1] = values["train/loss_step"]
                per_epoch = {k: v for k, v in values.items() if k.startswith("val/") or k == "train/loss"}
                if per_epoch and "epoch" in values:
                    epochs.setdefault(int(values["epoch"]), {}).update(per_epoch)
    return TrainingLog([{"epoch": e + 1, **epochs[e]} for e in sorted(epochs)], sorted(steps.items()))
