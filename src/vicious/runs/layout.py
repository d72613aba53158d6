"""Run directories: what a training run writes, and how to read it back.

    RUN/config.yaml           resolved config
    RUN/environment.json      seed, versions, device
    RUN/data.json             where the images were found; per split, their number and digest
    RUN/classifier.safetensors, RUN/decoder.safetensors   selected weights
    RUN/checkpoints/<phase>/  resumable Lightning state (safetensors format)
    RUN/logs/<phase>/         Lightning CSV logs
    RUN/training.json         what training did (epochs, best validation scores, time)
    RUN/metrics.json, RUN/per_sample.csv                 written by evaluation
    RUN/.lock, RUN/.lock.json                           held while a process writes the run, and by whom
"""

from __future__ import annotations

import dataclasses
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

import vicious
from vicious.data import DatasetSplits, load_dataset
from vicious.runs.checkpoints import load_weights
from vicious.config.schema import ConfigError, RunConfig, load_config
from vicious.models import create_classifier, create_decoder
from vicious.models.checks import check_decoder_output, check_input_size

CONFIG_FILE = "config.yaml"
CLASSIFIER_FILE = "classifier.safetensors"
DECODER_FILE = "decoder.safetensors"
DATA_FILE = "data.json"


def source_commit() -> str | None:
    """The git commit of the vicious source this process runs, with ``+dirty`` if it has
    uncommitted changes; None for an installed package or where git is missing."""
    source = Path(vicious.__file__).resolve().parent
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    # The package must be tracked by that repository: an installed copy inside some other
    # checkout (a venv in a project folder) would otherwise report that project's commit.
    commit = git("rev-parse", "HEAD") if git("ls-files", "--error-unmatch", "__init__.py") is not None else None
    if not commit:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ".") else "")


def environment_record(config: RunConfig) -> dict:
    """What a reader needs to reproduce or trust a result: the command and code that made it,
    when, and the software and hardware it ran on."""
    import lightning

    from vicious.runs.hardware import numeric_plan, trains_on_cuda

    # The device training runs on: the GPU only where the config lets Lightning use it.
    cuda = trains_on_cuda(config.train)
    return {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": config.seed,
        "vicious": vicious.__version__,
        "source_commit": source_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **numeric_plan(config.train).record(),  # what train.precision / channels_last=auto chose here
    }


def weights_metadata(config: RunConfig, splits: DatasetSplits) -> dict[str, str]:
    """What saved weights were trained for; ``open_run`` refuses weights that differ."""
    info = splits.info
    return {"dataset": info.name, "num_outputs": str(info.num_outputs), "channels": str(info.channels),
            "image_size": str(config.data.image_size), **architecture_metadata(config)}


def architecture_metadata(config: RunConfig) -> dict[str, str]:
    """What rebuilds the networks from a weights file alone (``vicious audit classifier.safetensors``):
    the architectures of F and G, G's input form and standardisation. Files written before these keys
    existed lack them; ``load_weights`` checks only the keys a file has."""
    model = config.model
    return {"classifier": model.classifier, "decoder": model.decoder, "depth": str(model.depth),
            "width": str(model.width), "output": config.output, "decoder_input_norm": str(model.decoder_input_norm).lower()}


def load_splits(config: RunConfig) -> DatasetSplits:
    """The dataset of a config, with the seeded subsets its limits ask for."""
    d = config.data
    splits = load_dataset(
        d.name, root=d.root, download=d.download, image_size=d.image_size, seed=config.seed,
        attributes=d.attributes,
    )
    limits = {"train": d.train_limit, "val": d.val_limit, "test": d.test_limit}
    subsets = {name: getattr(splits, name).subset(n, seed=config.seed) for name, n in limits.items() if n}
    return dataclasses.replace(splits, **subsets)


def build_models(config: RunConfig, splits: DatasetSplits) -> tuple[torch.nn.Module, torch.nn.Module]:
    info = splits.info
    try:
        classifier = create_classifier(
            config.model.classifier, depth=config.model.depth, width=config.model.width, in_channels=info.channels,
            num_outputs=info.num_outputs, mean=tuple(splits.mean), std=tuple(splits.std),
        )
        if config.model.classifier != "wrn":  # another library's network may not take these images
            check_input_size(classifier, info.channels, config.data.image_size)
    except ValueError as err:
        raise ConfigError(f"model.classifier: {err}") from None
    try:
        decoder = create_decoder(
            config.model.decoder, depth=config.model.depth, width=config.model.width, out_channels=info.channels,
            num_inputs=info.num_outputs, image_size=config.data.image_size, input_form=config.output, task=info.task,
            input_norm=config.model.decoder_input_norm, covert_key=config.model.covert_key,
        )
        if config.model.decoder != "wrn":  # the user's own G must give images of the data's shape
            check_decoder_output(decoder, info.num_outputs, (info.channels, config.data.image_size,
                                                             config.data.image_size))
    except ValueError as err:
        raise ConfigError(f"model.decoder: {err}") from None
    return classifier, decoder


@dataclass
class TrainedRun:
    """A finished run: its config, data and trained networks (eval mode)."""

    path: Path
    config: RunConfig
    splits: DatasetSplits
    classifier: torch.nn.Module
    decoder: torch.nn.Module


def open_run(path: Path, splits: DatasetSplits | None = None) -> TrainedRun:
    """Load a finished run directory; errors name what is missing."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE}); train one with 'vicious train'")
    config = load_config(path / CONFIG_FILE)
    for name in (CLASSIFIER_FILE, DECODER_FILE):
        if not (path / name).is_file():
            raise ConfigError(f"{path} has no {name}: training did not finish; resume it with 'vicious train --resume'")
    splits = splits or load_splits(config)
    classifier, decoder = build_models(config, splits)
    expect = weights_metadata(config, splits)
    load_weights(classifier, path / CLASSIFIER_FILE, expect)
    load_weights(decoder, path / DECODER_FILE, expect)
    return TrainedRun(path, config, splits, classifier.eval(), decoder.eval())
