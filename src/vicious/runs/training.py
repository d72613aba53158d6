"""Training a run: the regimes of docs/method.md ("Regimes") as a sequence of Lightning phases.

| regime      | phases                                            |
|-------------|---------------------------------------------------|
| honest      | ``classifier`` (F alone), then ``decoder`` (G on frozen F) |
| vicious     | ``joint`` (F and G together, beta_c > 0)          |
| autoencoder | ``joint`` with beta_c = 0                         |

Each phase keeps the epoch with the best validation score (``best.ckpt.safetensors``) and
a resumable ``last.ckpt.safetensors`` while it trains; a finished phase leaves its selected
weights (``selected.safetensors``) beside the last checkpoint and drops the best one, which
would be a second copy of them. (Older runs named them ``*.ckpt``; they still resume.) ``--resume`` after a kill restarts inside the phase that was running.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vicious.release.policies import release_policy
from vicious.attack.batches import TensorDataModule
from vicious.attack.lightning_module import AttackModule
from vicious.data import Split
from vicious.runs.checkpoints import (
    SafetensorsCheckpointIO,
    UnsafeFileError,
    check_weights,
    load_state,
    save_state,
    save_weights,
)
from vicious.config.schema import ConfigError, RunConfig, config_differences, load_config, save_config
from vicious.runs.files import atomic_write_json, check_writable, read_json, refuse_outside_links
from vicious.runs.hardware import numeric_plan, trains_on_cuda
from vicious.runs.locks import folder_lock
from vicious.runs.loggers import check_logger, phase_loggers
from vicious.runs.logs import epoch_progress_callbacks
from vicious.config.regimes import REGIMES, Phase
from vicious.runs.layout import (
    CLASSIFIER_FILE,
    CONFIG_FILE,
    DATA_FILE,
    DECODER_FILE,
    build_models,
    environment_record,
    load_splits,
    weights_metadata,
)
from vicious.models.own import check_allowed

# Set by Lightning's launcher (LOCAL_RANK, NODE_RANK), torchrun (RANK, LOCAL_RANK, GROUP_RANK),
# SLURM (SLURM_PROCID) and LSF (JSM_NAMESPACE_RANK).
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_global_zero() -> bool:
    """Whether this process is global rank 0, known before any Trainer exists.

    Under DDP every process runs the whole command (Lightning's launcher re-runs it
    with LOCAL_RANK set; torchrun and SLURM start them all), and only global rank 0
    writes the run directory: the process whose every rank variable that is set is 0.
    """
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def _phase_weights(run_dir: Path, phase: Phase) -> Path:
    return run_dir / "checkpoints" / phase / "selected.safetensors"


def prepare_run_dir(config: RunConfig, run_dir: Path, *, resume: bool) -> RunConfig:
    """Create or reopen a run directory; refuses to mix two different runs in one."""
    run_dir = Path(run_dir)
    _check_accelerator(config.train.accelerator)
    refuse_outside_links(run_dir)
    existing = run_dir / CONFIG_FILE
    # A folder where no checkpoint was ever written (e.g. the data was not found) holds nothing to keep.
    if existing.exists() and (run_dir / "checkpoints").exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        saved = load_config(existing)
        differences = config_differences(saved.model_dump(), config.model_dump())
        if differences:
            raise ConfigError(f"--resume with a different config than {existing}: {'; '.join(differences[:5])}")
    check_writable(run_dir)
    save_config(config, existing)
    return config


def _check_accelerator(accelerator: str) -> None:
    """Refuse a device that is not there before any data is loaded (Lightning would only say
    'No supported gpu backend found!' later)."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    missing = {"cuda": not cuda, "gpu": not (cuda or mps), "mps": not mps}.get(accelerator, False)
    if missing:
        raise ConfigError(
            f"train.accelerator={accelerator}, but this machine has no such device visible to torch; "
            "use train.accelerator=auto (or cpu)"
        )


def check_networks_allowed(config: RunConfig) -> None:
    """Refuse networks of the user's own whose module was not allowed, before the folder is made."""
    for key in ("classifier", "decoder"):
        try:
            check_allowed(getattr(config.model, key))
        except ValueError as err:
            raise ConfigError(f"model.{key}: {err}") from None


def train_run(config: RunConfig, run_dir: Path, *, resume: bool = False, splits=None) -> Path:
    """Train ``config`` into ``run_dir`` (see module docstring); returns ``run_dir``.

    The writing process holds the folder's lock throughout: a second process is refused."""
    run_dir = Path(run_dir)
    check_logger(config.train.logger)  # before the folder is made, in every process
    check_networks_allowed(config)
    writer = is_global_zero()  # under DDP the other processes only train
    if not writer:
        return _train_locked(config, run_dir, resume, splits, writer)
    _check_accelerator(config.train.accelerator)  # before the folder is made
    with folder_lock(run_dir):
        return _train_locked(config, run_dir, resume, splits, writer)


def _train_locked(config: RunConfig, run_dir: Path, resume: bool, splits, writer: bool) -> Path:
    if writer:
        config = prepare_run_dir(config, run_dir, resume=resume)
        atomic_write_json(run_dir / "environment.json", environment_record(config))
    L.seed_everything(config.seed, workers=True, verbose=False)
    splits = splits or load_splits(config)
    if writer:
        _check_same_data(run_dir, splits)
    classifier, decoder = build_models(config, splits)
    summary: dict = {"phases": {}}
    started = time.perf_counter()
    for phase in REGIMES[config.regime].phases:
        selected = _phase_weights(run_dir, phase)
        if selected.exists():  # finished before an interruption
            _load_phase(selected, classifier, decoder)
            continue
        summary["phases"][phase] = _fit_phase(config, run_dir, phase, splits, classifier, decoder, resume)
        # Every process has loaded the phase's best checkpoint before rank 0 deletes it.
        _wait_for_every_process()
        if writer:
            save_state({"classifier": classifier.state_dict(), "decoder": decoder.state_dict()}, selected)
            best = summary["phases"][phase]["best_checkpoint"]
            if best:  # its weights are now in `selected`
                (selected.parent / best).unlink(missing_ok=True)
    if writer:
        _write_results(config, run_dir, splits, classifier, decoder, summary, started)
    _wait_for_every_process()  # every process returns once the weights are on disk
    return run_dir


def _wait_for_every_process() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def data_record(splits) -> dict:
    """Which images a run trains and is measured on: where they were found, and per split
    the number of images and a digest of images and labels."""
    def digest(split) -> str:
        h = hashlib.sha256(split.images.cpu().contiguous().numpy().tobytes())
        h.update(split.labels.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    return {"source": splits.source, **{name: {"images": len(s), "sha256": digest(s)} for name, s in parts.items()}}


def _check_same_data(run_dir: Path, splits) -> None:
    """A resumed run must see the images it started with: another machine, or a changed
    --data-root, may find other files (e.g. the embedded subset instead of the full set)."""
    path, record = run_dir / DATA_FILE, data_record(splits)
    if path.exists() and (run_dir / "checkpoints").exists():
        saved = read_json(path, what="data record")
        saved = saved if isinstance(saved, dict) else {}
        changed = [f"{name} ({record[name]['images']} images now, {saved[name]['images']} before)"
                   for name in ("train", "val", "test") if saved.get(name) != record[name]]
        if changed:
            raise ConfigError(
                f"the data found now ({record['source']}) are not those this run started with "
                f"({saved.get('source')}): other images in {', '.join(changed)}; "
                "point --data-root at the original files, or start a new run"
            )
    atomic_write_json(path, record)


def _write_results(config, run_dir, splits, classifier, decoder, summary, started) -> None:
    metadata = weights_metadata(config, splits)
    save_weights(classifier, run_dir / CLASSIFIER_FILE, metadata)
    save_weights(decoder, run_dir / DECODER_FILE, metadata)
    summary["train_seconds"] = round(time.perf_counter() - started, 2)
    summary["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = run_dir / "training.json"
    if previous.exists():  # keep what earlier sessions of a resumed run recorded
        earlier = read_json(previous, what="training record")
        phases = earlier.get("phases") if isinstance(earlier, dict) else None
        summary["phases"] = {**(phases if isinstance(phases, dict) else {}), **summary["phases"]}
    atomic_write_json(previous, summary)


class _MovableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose state survives the run folder being moved or copied, and whose
    paths cannot lead out of its folder.

    Lightning keeps absolute paths in its state and, when the folder changed, forgets
    the best score so far: a run resumed elsewhere could then select another epoch.
    It also deletes the files those paths name once a better epoch comes, checking only
    that they start with its folder: ``<dirpath>/../../victim`` passes. So every path read
    from a checkpoint must resolve (links and '..' followed) to a checkpoint in the folder.

    The files are safetensors, and say so in their suffix (``.ckpt.safetensors``), so nobody
    mistakes them for Lightning's pickles; a run of an older vicious named them ``.ckpt``.
    """

    FILE_EXTENSION = ".ckpt.safetensors"
    LEGACY_EXTENSION = ".ckpt"
    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    @classmethod
    def resumable(cls, folder: Path) -> Path | None:
        """The phase's last checkpoint in ``folder``, under today's name or an older run's."""
        for extension in (cls.FILE_EXTENSION, cls.LEGACY_EXTENSION):
            path = folder / f"{cls.CHECKPOINT_NAME_LAST}{extension}"
            if path.exists():
                return path
        return None

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if isinstance(old, str) and old and new and old != new:
            def moved(value):
                inside = isinstance(value, str) and (value == old or value.startswith(old + os.sep))
                return new + value[len(old):] if inside else value

            state_dict = {key: moved(value) for key, value in state_dict.items()}
            best_k = state_dict.get("best_k_models", {})
            if isinstance(best_k, dict):
                state_dict["best_k_models"] = {moved(k): v for k, v in best_k.items()}
        self._check_state(state_dict)
        super().load_state_dict(state_dict)

    def _check_state(self, state: dict) -> None:
        source = Path(self.dirpath or ".") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

        def refuse(problem: str):
            raise UnsafeFileError(f"{source}: its checkpoint state {problem}; the checkpoint was altered or is not "
                                  f"this run's: delete it to train the phase again, or restore it from a copy")

        for key in ("best_model_score", "best_model_path"):
            if key not in state:
                refuse(f"lacks {key}")
        for key in ("best_model_score", "kth_value", "current_score"):
            if not (state.get(key) is None or isinstance(state[key], torch.Tensor)
                    or (isinstance(state[key], (int, float)) and not isinstance(state[key], bool))):
                refuse(f"holds a {type(state[key]).__name__} as {key}, not a score")
        best_k = state.get("best_k_models", {})
        if not isinstance(best_k, dict) or not all(isinstance(v, (torch.Tensor, int, float)) for v in best_k.values()):
            refuse("holds best_k_models that are not a mapping of paths to scores")
        for value in [*(state.get(key, "") for key in self._PATHS), *best_k]:
            if not isinstance(value, str):
                refuse(f"names a {type(value).__name__} as a checkpoint path")
            if value and not self._inside(value):
                refuse(f"names {value[:200]!r}, which is not a checkpoint file in {self.dirpath}")

    def _inside(self, path: str) -> bool:
        if "\x00" in path or not path.endswith((self.FILE_EXTENSION, self.LEGACY_EXTENSION)):
            return False
        folder, resolved = os.path.realpath(self.dirpath), os.path.realpath(path)
        return os.path.dirname(resolved) == folder

    def _should_remove_checkpoint(self, trainer, previous: str, current: str) -> bool:
        # Lightning's check does not resolve '..' or links; never delete outside the folder.
        return self._inside(previous) and super()._should_remove_checkpoint(trainer, previous, current)


def _load_phase(path: Path, classifier: torch.nn.Module, decoder: torch.nn.Module) -> None:
    state = load_state(path)
    for name, network in (("classifier", classifier), ("decoder", decoder)):
        network.load_state_dict(check_weights(state, name, path, network.state_dict()))


@torch.no_grad()
def frozen_outputs(classifier: torch.nn.Module, images: torch.Tensor, train, plan) -> torch.Tensor:
    """F's outputs (N, K) float32 for uint8 images, in eval mode, on the training device and
    in the training precision (so G sees what it would see computing them per batch)."""
    device = torch.device("cuda", torch.cuda.current_device()) if trains_on_cuda(train) else torch.device("cpu")
    classifier = classifier.to(device).eval()
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    outputs = []
    for start in range(0, len(images), train.eval_batch_size):
        x = (images[start : start + train.eval_batch_size].to(device).float() / 255).contiguous(
            memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.precision == "bf16-mixed"):
            outputs.append(classifier(x).float().cpu())
    return torch.cat(outputs)


def _fit_phase(config, run_dir, phase, splits, classifier, decoder, resume) -> dict:
    train = config.train
    epochs = train.decoder_epochs or train.epochs if phase == "decoder" else train.epochs
    plan = numeric_plan(train)
    train_split = splits.train
    # Without augmentation a frozen F gives every training image the same outputs in every
    # epoch: compute them once, and the decoder phase trains G alone (a quarter of its cost).
    outputs_given = phase == "decoder" and not config.data.augment
    if outputs_given:
        train_split = Split(train_split.images, frozen_outputs(classifier, train_split.images, train, plan))
    module = AttackModule(
        classifier, decoder, phase=phase, loss=config.loss, lr=train.lr, schedule=train.schedule,
        warmup_fraction=train.warmup_fraction, decoder_lr_scale=train.decoder_lr_scale, seed=config.seed,
        augment=config.data.augment, pos_weight=splits.pos_weight, channels_last=plan.channels_last,
        nan_check_every=50 if trains_on_cuda(train) else 1, outputs_given=outputs_given,
        release=release_policy(config.release),
    )
    if plan.channels_last:
        module = module.to(memory_format=torch.channels_last)
    checkpoint_dir = run_dir / "checkpoints" / phase
    progress_bar, progress = epoch_progress_callbacks(train.progress, f"{config.regime}/{phase}")
    best = _MovableCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor="val/score", mode="min", save_top_k=1,
        save_last=True, enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=epochs, max_time=None if train.max_minutes is None else {"minutes": train.max_minutes},
        accelerator=train.accelerator, devices=train.devices, num_nodes=train.num_nodes,
        strategy=train.strategy, precision=plan.precision, plugins=[SafetensorsCheckpointIO(module.state_dict())],
        accumulate_grad_batches=train.accumulate_grad_batches, sync_batchnorm=train.sync_batchnorm,
        use_distributed_sampler=False,  # our samplers shard themselves (vicious.attack.batches)
        callbacks=[best, *progress], logger=phase_loggers(train.logger, run_dir, phase, run_dir.name),
        log_every_n_steps=train.log_every_n_steps,
        enable_progress_bar=progress_bar, enable_model_summary=False, deterministic=False,
        num_sanity_val_steps=0, default_root_dir=run_dir,
    )
    data = TensorDataModule(train_split, splits.val, batch_size=train.batch_size,
                            eval_batch_size=train.eval_batch_size, seed=config.seed,
                            data_on_device=train.data_on_device)
    if train.compile:
        # The networks, not the LightningModule (training_step never calls its forward);
        # in place, so parameter names and checkpoints stay as they are.
        classifier.compile()
        decoder.compile()
    last = _MovableCheckpoint.resumable(checkpoint_dir)
    with warnings.catch_warnings():
        # Lightning suggests DataLoader workers; the data is already in memory.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # val/* come from torchmetrics, which all-reduces them itself.
        warnings.filterwarnings("ignore", r".*self.log\('val/.*sync_dist=True.*")
        warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # expected when resuming
        warnings.filterwarnings("ignore", r".*module\(s\) in eval mode.*")  # the decoder phase's frozen F
        trainer.fit(module, datamodule=data, ckpt_path=last if resume else None)
    if best.best_model_path:
        path = Path(best.best_model_path)
        module.load_state_dict(check_weights(load_state(path), "state_dict", path, module.state_dict()))
    return {
        "epochs": epochs,
        "best_epoch_score": float(best.best_model_score) if best.best_model_score is not None else None,
        "best_checkpoint": Path(best.best_model_path).name if best.best_model_path else None,
    }
