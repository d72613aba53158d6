"""Typed, validated run configurations.

A run is one ``RunConfig``: what the server trains (``regime``), what it observes
(``output``), on which data, with which model, objective and optimiser. Every value
has its allowed range here; ``apply_overrides`` takes dotted ``key=value`` pairs as
given on the command line. Errors are ``ConfigError`` with one line naming the key.

Every YAML file is read by ``read_yaml``: at most ``MAX_YAML_BYTES``, nesting at most
``MAX_YAML_DEPTH`` deep, anchors and aliases refused (a kilobyte of aliases can expand
to gigabytes), and numbers in any usual notation (``1e-4``) read as numbers.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import vicious
from vicious.config.regimes import REGIME_NAMES, REGIMES
from vicious.files import atomic_write_bytes

RegimeName = Literal[REGIME_NAMES]  # type: ignore[valid-type]  # the names of vicious.config.regimes
OutputForm = Literal["raw", "softmax"]


class ConfigError(ValueError):
    """A configuration value, key or file that cannot be used; the message names it."""


#: Largest YAML file read (configs and grids are a few kilobytes).
MAX_YAML_BYTES = 2**20
#: Deepest nesting of YAML lists and mappings (configs are two levels deep).
MAX_YAML_DEPTH = 32
#: Largest seed: numpy's and Lightning's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases, with a nesting limit, and with YAML 1.2 floats
    (YAML 1.1 reads ``1e-4``, without a dot, as a string)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed; "
                                              "write the values out", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes the strings ``_BoundedLoader`` would read as floats (a folder ``1e5``)."""


_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
for _cls in (_BoundedLoader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def dump_yaml(values: Any) -> str:
    """YAML text that ``parse_yaml`` reads back as the same values."""
    return yaml.dump(values, Dumper=_Dumper, sort_keys=False)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text read by ``_BoundedLoader``; errors are one ConfigError line naming ``where``."""
    loader = _BoundedLoader(text)  # what yaml.load does, with this SafeLoader subclass
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(f"{err.context or ''} {err.problem or ''}".split())
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{where} holds a value that cannot be read: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """A YAML file, read with bounds (see the module docstring); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # never more than the limit, whatever the file claims
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{path} is larger than {max_bytes // 1024} KiB, too large for a {what}; "
                          "a config or grid is a few kilobytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save the {what} as UTF-8") from None
    return parse_yaml(text, str(path))


class _Section(BaseModel):
    # strict: "3" is not an int; extra="forbid": a misspelt key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Section):
    name: str = "fashion-mnist"
    root: str | None = Field(None, description="folder holding the dataset files; None searches the defaults")
    download: bool = Field(False, description="let torchvision download the dataset")
    image_size: int = Field(32, ge=8, le=256, multiple_of=8)
    attributes: str | list[int | str] | None = Field(
        None, description="CelebA attributes: a K-set name such as 'k10' or a list of indices or names"
    )
    train_limit: int | None = Field(None, ge=1, description="use a seeded subset of this many training images")
    val_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    augment: bool = Field(True, description="append an augmented copy of every training image (docs/method.md, 'Augmentation')")


# A network of the user's own, ``package.module:callable`` (vicious.models.own imports it, where allowed).
OWN_SPEC = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"


class ModelConfig(_Section):
    classifier: str = Field(
        "wrn", max_length=100, pattern=rf"^(wrn|(torchvision|timm):[A-Za-z0-9_.\-]+|{OWN_SPEC})$",
        description="F: wrn (WideResNet of depth and width), torchvision:<name>, timm:<name> or module:callable "
                    "(your own, imported only with --allow-import)")
    decoder: str = Field(
        "wrn", max_length=100, pattern=rf"^(wrn|{OWN_SPEC})$",
        description="G: wrn (the WideResNet decoder of depth and width) or module:callable (your own, imported "
                    "only with --allow-import)")
    depth: int = Field(28, ge=10, le=100, description="WideResNet depth, 6n + 4")
    width: int = Field(1, ge=1, le=16, description="WideResNet widening factor")
    decoder_input_norm: bool = Field(
        False, description="standardise G's K inputs (BatchNorm) before its linear layer; off = the paper's G"
    )
    covert_key: int | None = Field(
        None, ge=0, le=MAX_SEED, description="the server's secret key: G reads F's outputs through a mixing drawn "
                                             "from it (vicious.models.covert); None = no mixing")

    @model_validator(mode="after")
    def _depth_is_6n_plus_4(self) -> ModelConfig:
        if (self.depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 (10, 16, 22, 28, ...), got {self.depth}")
        return self


# Default evasion targets: honest Fashion-MNIST classifiers. The first three are the medians of the
# 8 honest references of the shipped calibration (vicious/defences/calibrations/fashion-mnist.json);
# linear leakage, which no detector reports, was measured on an honest WRN-10-1.
_SHIPPED = "median of the shipped Fashion-MNIST calibration's 8 honest references"


class LossConfig(_Section):
    beta_c: float = Field(1.0, ge=0, description="weight of the task loss")
    beta_r: float = Field(3.0, ge=0, description="weight of the reconstruction loss")
    alpha_huber: float = Field(5.0, ge=0)
    alpha_ssim: float = Field(1.0, ge=0)
    huber_delta: float = Field(1.0, gt=0)
    beta_ent: float = Field(0.0, ge=0, description="entropy penalty on F's outputs (adaptive attacker)")
    # Evading the detectors (vicious.attack.evasion): joint phase only, each weight times a squared
    # hinge of a detector's primary statistic beyond its honest target.
    evade_logit_norm: float = Field(
        0.0, ge=0, description="weight of relu(logit norm - target)^2 (evading output_statistics' logit_norm)")
    evade_logit_norm_target: float = Field(
        2.7, ge=0, le=1e6, description=f"honest mean |log-odds| / sqrt K: {_SHIPPED} (range 1.5 to 4.8)")
    evade_confidence: float = Field(
        0.0, ge=0, description="weight of relu(target - mean top-1 probability)^2 (evading low_confidence)")
    evade_confidence_target: float = Field(
        0.74, ge=0, le=1, description=f"honest mean top-1 probability: {_SHIPPED} (range 0.66 to 0.87)")
    evade_contrast: float = Field(
        0.0, ge=0, description="weight of relu(within-class contrast - target)^2 (evading sensitivity; F also "
        "runs on a perturbed copy of each image)")
    evade_contrast_target: float = Field(
        4.3, ge=0, le=1e6, description=f"honest within-class pair distance over movement under perturbation: "
        f"{_SHIPPED} (range 3.5 to 4.8)")
    evade_leakage: float = Field(
        0.0, ge=0, description="weight of relu(linear leakage - target)^2 (evading excess_leakage; linear leakage: "
        "the share of within-class pixel variance a ridge decoder reads from the outputs' within-class residuals)")
    evade_leakage_target: float = Field(
        0.28, ge=0, le=1, description="honest linear leakage: an honest WRN-10-1 (fashion-mnist-honest-small, "
        "1 epoch) on test batches of 256 (a vicious one, as trained: 0.35)")
    evade_leakage_ridge: float = Field(
        0.01, gt=0, le=1e6, description="the linear shadow decoder's ridge, relative to its standardised inputs' variance")


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=10_000)
    decoder_epochs: int | None = Field(None, ge=1, le=10_000, description="honest regime: post-hoc decoder epochs")
    batch_size: int = Field(250, ge=1, le=65_536, description="per process: DDP on w devices steps on w x batch_size")
    accumulate_grad_batches: int = Field(1, ge=1, le=1024, description="optimiser step every this many batches")
    max_minutes: float | None = Field(  # le: a timedelta of more overflows
        None, gt=0, le=1e8, description="stop each phase after this wall time (the best epoch so far is kept)"
    )
    lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's learning rate; the peak rate under a one-cycle schedule")
    schedule: Literal["constant", "onecycle"] = Field(
        "constant", description="learning rate over a phase: constant (the paper) or one-cycle (warm-up, cosine decay)"
    )
    warmup_fraction: float = Field(0.25, gt=0, lt=1, description="one-cycle: fraction of the steps spent warming up")
    decoder_lr_scale: float = Field(1.0, gt=0, le=100, description="G's learning rate is train.lr times this")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed where the device computes bf16 natively (AMX/AVX512-BF16 CPUs, GPUs), else 32-true"
    )
    channels_last: bool | Literal["auto"] = Field("auto", description="auto: on for CPUs, and for GPUs under bf16-mixed")
    compile: bool = False
    sync_batchnorm: bool = Field(False, description="DDP on GPUs: BatchNorm statistics over the global batch")
    data_on_device: bool = Field(True, description="on a GPU, hold the images there and gather batches on it")
    eval_batch_size: int = Field(1000, ge=1, le=65_536)
    logger: Literal["csv", "tensorboard", "wandb", "mlflow"] = Field(
        "csv", description="csv (always written) plus this one: tensorboard, wandb or mlflow (optional packages)")
    log_every_n_steps: int = Field(10, ge=1, le=100_000, description="log the training loss every this many steps")
    progress: bool | Literal["lines"] = Field(
        True, description="report progress: true = a bar on a terminal, else one line per epoch; "
        "'lines' = one line per epoch always; false = nothing")


class ReleaseConfig(_Section):
    """What users send the server: F's outputs after a release policy (``vicious.release.policies``).

    A server that expects the policy trains through it (the vicious and autoencoder
    regimes train F and G with it between them, the honest regime its post-hoc decoder
    on released outputs), and every measure of the run is taken on released outputs."""

    policy: Literal["none", "topk", "label-only", "round", "temperature", "gaussian", "laplace"] = Field(
        "none", description="none, topk (k), label-only, round (decimals), temperature, gaussian or laplace (scale)")
    k: int = Field(3, ge=1, le=100_000, description="topk: the classes whose values are released")
    decimals: int = Field(1, ge=0, le=8, description="round: decimals kept")
    temperature: float = Field(2.0, gt=0, le=1e6, description="temperature: logits divided by this")
    scale: float = Field(0.1, ge=0, le=1e6, description="gaussian, laplace: the noise's scale (sd, or b)")


class EvaluationConfig(_Section):
    variance_fraction: float = Field(0.9, gt=0, le=1, description="R principal: variance held by the subspace")
    num_images: int = Field(8, ge=1, le=64, description="images shown in reconstruction grids")


#: The weights of the evasion penalties (vicious.attack.evasion); all 0 trains as without them.
EVASION_WEIGHTS = ("evade_logit_norm", "evade_confidence", "evade_contrast", "evade_leakage")

#: Config keys that say how a run is shown or logged and where its data lives, never what it
#: computes: a resumed run may change them, and a sweep's finished cell keeps its results.
OPERATIONAL_KEYS = ("version", "data.root", "data.download", "train.progress", "train.logger", "train.log_every_n_steps")


def flatten_config(values: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict, wanted: dict, wanted_as: str = "given") -> list[str]:
    """What differs between a saved config mapping and a wanted one, leaving out the
    ``OPERATIONAL_KEYS``: ``"train.lr: saved 0.015, given 0.01"``, in key order. A key the
    saved config lacks (written before that key existed) counts as its default, which is what
    that run did."""
    defaults = flatten_config(RunConfig().model_dump())
    a, b = flatten_config(saved), flatten_config(wanted)
    a = {**{k: defaults[k] for k in b if k not in a and k in defaults}, **a}
    return [f"{k}: saved {a.get(k)!r}, {wanted_as} {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(OPERATIONAL_KEYS)]


class RunConfig(_Section):
    regime: RegimeName = "vicious"
    output: OutputForm = "raw"
    seed: int = Field(1, ge=0, le=MAX_SEED, description="seeds numpy, torch and Lightning: 0 to 2**32 - 1")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    release: ReleaseConfig = ReleaseConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    preset: str | None = Field(None, description="the preset this config started from")
    version: str = Field(vicious.__version__, description="vicious version that wrote this config")

    @model_validator(mode="after")
    def _regime_weights(self) -> RunConfig:
        REGIMES[self.regime].check(self.loss.beta_c, self.loss.beta_r)
        evading = [key for key in EVASION_WEIGHTS if getattr(self.loss, key)]
        if evading and "joint" not in REGIMES[self.regime].phases:
            raise ValueError(f"loss.{evading[0]} trains F against the detectors in the joint phase, which the "
                             f"{self.regime} regime lacks: set it to 0, or use regime=vicious")
        return self


def format_validation_error(err: ValidationError, whole: str = "config") -> str:
    """The first problem pydantic found, in one line that names the key (``whole`` where the
    problem is with the whole mapping). Every validated file's errors go through here."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or whole
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}{shown}"


def validate_config(values: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from plain values, raising ConfigError with the offending key."""
    _check_keys(values, RunConfig, prefix="")
    try:
        return RunConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def _check_keys(values: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    fields = model.model_fields
    for key, value in values.items():
        if not isinstance(key, str):
            where = f" in section '{prefix.rstrip('.')}'" if prefix else ""
            raise ConfigError(f"config key {key!r}{where} is not a name; keys are names such as "
                              f"{', '.join(repr(f) for f in list(fields)[:3])}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"'{prefix}{key}' is a section; set its keys, e.g. '{prefix}{key}.<name>=...'")
            _check_keys(value, annotation, prefix=f"{prefix}{key}.")


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.beta_r=3"`` -> ``("loss.beta_r", 3)``; values are read as YAML scalars or lists,
    numbers in any notation Python reads (``1e-4``, ``1_000``) as numbers."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.epochs=5)")
    return key.strip(), parse_value(raw)


def parse_value(raw: str) -> Any:
    """One override value: an int or float if Python reads it as one, else YAML, else the text."""
    stripped = raw.strip()
    if not stripped:
        return None
    for number in (int, float):
        try:
            return number(stripped)
        except ValueError:
            pass
    try:
        return parse_yaml(raw, "value")
    except ConfigError:
        return raw


def apply_overrides(config: RunConfig, overrides: dict[str, Any] | list[str]) -> RunConfig:
    """Return a new config with dotted-key overrides applied and everything re-validated."""
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    values = config.model_dump()
    for dotted, value in overrides.items():
        target = values
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(parents[: i + 1])}' is not a section")
            target = target[part]
        if leaf not in target:
            close = difflib.get_close_matches(leaf, list(target), n=1)
            hint = f"; did you mean '{'.'.join([*parents, close[0]])}'?" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        target[leaf] = value
    return validate_config(values)


def save_config(config: RunConfig, path: Path) -> None:
    """Write ``config`` as YAML to ``path``, atomically (``vicious.files``)."""
    atomic_write_bytes(Path(path), dump_yaml(config.model_dump()).encode("utf-8"))


def read_yaml_mapping(path: Path, what: str, not_mapping: str) -> dict:
    """A YAML file holding a mapping, read by ``read_yaml``; errors name the file (``what`` and
    ``not_mapping`` word them for the caller)."""
    values = read_yaml(Path(path), what)
    if not isinstance(values, dict):
        raise ConfigError(f"{path} {not_mapping}")
    return values


def load_config(path: Path, *, base: RunConfig | None = None, check_version: bool = True) -> RunConfig:
    """A config file as a partial override of ``base`` (default: the defaults).

    A file written by ``save_config`` holds every key, so it loads back unchanged whatever
    the base; a hand-written one names only what it changes. ``version`` is optional; when
    present, other major.minor versions are refused by name. Errors name the file."""
    values = read_yaml_mapping(Path(path), "config file", "does not hold a config mapping")
    return merge_config(values, str(path), base=base, check_version=check_version)


def merge_config(values: dict[str, Any], source: str, *, base: RunConfig | None = None,
                 check_version: bool = True) -> RunConfig:
    """The mapping of a config file (``source`` names it in errors) laid over ``base``; see ``load_config``."""
    values = dict(values)  # the caller's mapping stays as it was
    if "version" in values:
        written = str(values.pop("version"))
        if check_version and not vicious.reads_version(written):
            raise ConfigError(
                f"{source} was written by vicious {written}, this is {vicious.__version__}; "
                "re-run with this version or install the one that wrote it, or delete its 'version' line"
            )
    try:
        _check_keys(values, RunConfig, prefix="")
        merged = _merge((base or RunConfig()).model_dump(), values)
        merged["version"] = vicious.__version__
        return validate_config(merged)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _merge(into: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``into`` with ``values`` laid over it, section by section."""
    out = dict(into)
    for key, value in values.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
