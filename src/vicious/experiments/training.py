"""Training a run: the regimes of METHOD.md as a sequence of Lightning phases.

| regime      | phases                                            |
|-------------|---------------------------------------------------|
| honest      | ``classifier`` (F alone), then ``decoder`` (G on frozen F) |
| vicious     | ``joint`` (F and G together, beta_c > 0)          |
| autoencoder | ``joint`` with beta_c = 0                         |

Each phase keeps the epoch with the best validation score and a resumable
``last.ckpt``; a finished phase leaves its selected weights, so ``--resume`` after a
kill restarts inside the phase that was running.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from vicious.attack.batches import make_loader
from vicious.attack.lightning_module import AttackModule, Phase
from vicious.experiments.checkpoints import SafetensorsCheckpointIO, load_state, load_weights, save_weights
from vicious.experiments.config import ConfigError, RunConfig, load_config, save_config
from vicious.experiments.files import atomic_write_json, check_writable
from vicious.experiments.runs import (
    CLASSIFIER_FILE, CONFIG_FILE, DECODER_FILE, build_models, environment_record, load_splits,
)

PHASES: dict[str, list[Phase]] = {
    "honest": ["classifier", "decoder"],
    "vicious": ["joint"],
    "autoencoder": ["joint"],
}


def _phase_weights(run_dir: Path, phase: Phase) -> Path:
    return run_dir / "checkpoints" / phase / "selected.safetensors"


def prepare_run_dir(config: RunConfig, run_dir: Path, *, resume: bool) -> RunConfig:
    """Create or reopen a run directory; refuses to mix two different runs in one."""
    run_dir = Path(run_dir)
    existing = run_dir / CONFIG_FILE
    if existing.exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        saved = load_config(existing)
        differences = _differences(saved.model_dump(), config.model_dump())
        # Progress display and where the data lives may change between sessions.
        differences = [d for d in differences if not d.startswith(("train.progress", "data.root", "data.download"))]
        if differences:
            raise ConfigError(f"--resume with a different config than {existing}: {'; '.join(differences[:5])}")
    check_writable(run_dir)
    save_config(config, existing)
    return config


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: saved {va!r}, given {vb!r}")
    return out


def train_run(config: RunConfig, run_dir: Path, *, resume: bool = False, splits=None) -> Path:
    """Train ``config`` into ``run_dir`` (see module docstring); returns ``run_dir``."""
    run_dir = Path(run_dir)
    config = prepare_run_dir(config, run_dir, resume=resume)
    atomic_write_json(run_dir / "environment.json", environment_record(config))
    L.seed_everything(config.seed, workers=True, verbose=False)
    splits = splits or load_splits(config)
    classifier, decoder = build_models(config, splits)
    summary: dict = {"phases": {}}
    started = time.perf_counter()
    for phase in PHASES[config.regime]:
        selected = _phase_weights(run_dir, phase)
        if selected.exists():  # finished before an interruption
            _load_phase(selected, classifier, decoder)
            continue
        summary["phases"][phase] = _fit_phase(config, run_dir, phase, splits, classifier, decoder, resume)
        save_state_dict = {"classifier": classifier.state_dict(), "decoder": decoder.state_dict()}
        from vicious.experiments.checkpoints import save_state

        save_state(save_state_dict, selected)
    metadata = {"dataset": splits.info.name, "num_outputs": str(splits.info.num_outputs),
                "channels": str(splits.info.channels), "image_size": str(config.data.image_size)}
    save_weights(classifier, run_dir / CLASSIFIER_FILE, metadata)
    save_weights(decoder, run_dir / DECODER_FILE, metadata)
    summary["train_seconds"] = round(time.perf_counter() - started, 2)
    previous = run_dir / "training.json"
    if previous.exists():  # keep what earlier sessions of a resumed run recorded
        summary["phases"] = {**json.loads(previous.read_text()).get("phases", {}), **summary["phases"]}
    atomic_write_json(previous, summary)
    return run_dir


def _load_phase(path: Path, classifier: torch.nn.Module, decoder: torch.nn.Module) -> None:
    state = load_state(path)
    classifier.load_state_dict(state["classifier"])
    decoder.load_state_dict(state["decoder"])


def _fit_phase(config, run_dir, phase, splits, classifier, decoder, resume) -> dict:
    train = config.train
    epochs = train.decoder_epochs or train.epochs if phase == "decoder" else train.epochs
    module = AttackModule(
        classifier, decoder, phase=phase, loss=config.loss, lr=train.lr, seed=config.seed,
        augment=config.data.augment, pos_weight=splits.pos_weight, channels_last=train.channels_last,
        nan_check_every=1 if train.accelerator == "cpu" or not torch.cuda.is_available() else 50,
    )
    if train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    checkpoint_dir = run_dir / "checkpoints" / phase
    best = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor="val/score", mode="min", save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=train.accelerator, devices=train.devices, num_nodes=train.num_nodes,
        strategy=train.strategy, precision=train.precision, plugins=[SafetensorsCheckpointIO()],
        callbacks=[best], logger=CSVLogger(run_dir / "logs", name=phase, version=""),
        enable_progress_bar=train.progress, enable_model_summary=False, deterministic=False,
        num_sanity_val_steps=0, default_root_dir=run_dir,
    )
    train_loader = make_loader(splits.train.images, splits.train.labels, batch_size=train.batch_size,
                               shuffle=True, seed=config.seed)
    val_loader = make_loader(splits.val.images, splits.val.labels, batch_size=train.eval_batch_size, shuffle=False)
    fit_module = torch.compile(module) if train.compile else module
    last = checkpoint_dir / "last.ckpt"
    with warnings.catch_warnings():
        # Lightning suggests DataLoader workers; the data is already in memory.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(fit_module, train_loader, val_loader, ckpt_path=last if resume and last.exists() else None)
    if best.best_model_path:
        state = load_state(Path(best.best_model_path))["state_dict"]
        module.load_state_dict(state)
    return {
        "epochs": epochs,
        "best_epoch_score": float(best.best_model_score) if best.best_model_score is not None else None,
        "best_checkpoint": Path(best.best_model_path).name if best.best_model_path else None,
    }
