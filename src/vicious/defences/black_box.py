"""A user's classifier as a black box: images in, outputs out.

Every detector sees a classifier only through :class:`BlackBox`, a callable
``images (N, C, S, S) float in [0, 1] -> outputs (N, K) float32``. :func:`open_classifier`
builds it from a file someone else may have written:

* a TorchScript file (``torch.jit.save``), read by TorchScript's own loader;
* an ONNX file, run through ONNX Runtime;
* a run directory of this project (``vicious train``), whose ``softmax`` runs
  release probabilities and ``raw`` runs logits; only its config's architecture, output
  form and image size are read, never its data settings.

The model is loaded and run in a confined worker process (:mod:`vicious.defences.sandbox`):
this process checks only what it can check cheaply before (the file's kind, a TorchScript
archive's unpacked size, an ONNX model's static batch) and every reply after. Pickles are
never loaded: a ``torch.save`` file is refused by name before any loader touches it. The
model is checked against the dataset (input ``(C, S, S)``, output size K, floating-point
outputs) and fails with one line naming the mismatch.
"""

from __future__ import annotations

import os
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from vicious.data import DatasetInfo
from vicious.defences import model_formats
from vicious.defences.onnx_files import NotOnnx, external_locations
from vicious.defences.sandbox import (
    MAX_REPLY_BYTES,
    ModelError,
    ModelProcess,
    SandboxError,
    SandboxLimits,
    find_bwrap,
    printable,
)
from vicious.files import format_bytes
from vicious.release.outputs import (
    FORMS,
    Form,
    Task,
    check_outputs,
    detect_form,
    observed_form,
)

_PICKLE_MAGIC = (b"\x80", b"(", b"}", b"]")  # pickle protocols 2-5, and 0/1 containers
# A static batch the audit pads every batch to; more is a crafted file (a 1e8 batch asks 400 GB).
MAX_STATIC_BATCH = 4096
# A TorchScript archive holds a few files per module and one per tensor: WRN-28-10 has ~300.
MAX_ARCHIVE_MEMBERS = 100_000
# An export writes one file of external data (or one per tensor, a few hundred).
MAX_EXTERNAL_FILES = 10_000


@dataclass(frozen=True)
class BlackBox:
    """A classifier seen only through its outputs.

    predict: float32 images ``(n, C, S, S)`` in [0, 1] -> outputs ``(n, K)``; called
        with at most ``batch_size`` images (exactly ``batch_size`` if ``fixed_batch``).
    input_shape: ``(C, S, S)``.
    num_outputs: K.
    task: ``"multiclass"`` or ``"multilabel"``.
    form: ``"logits"`` or ``"probabilities"``: what the outputs are.
    source: where the model came from, for messages and reports.
    """

    predict: Callable[[torch.Tensor], torch.Tensor]
    input_shape: tuple[int, int, int]
    num_outputs: int
    task: Task
    form: Form
    source: str
    batch_size: int = 500
    fixed_batch: bool = False

    def close(self) -> None:
        """End the model's worker process, if it has one (idempotent)."""
        close = getattr(self.predict, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> BlackBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, K)`` float32 on the CPU for images ``(N, C, S, S)`` in [0, 1]."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{self.source} takes images (N, {', '.join(map(str, self.input_shape))}), got {got}")
        images = images.float()
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            n = len(batch)
            if self.fixed_batch and n < self.batch_size:  # pad a static-batch model's last batch
                batch = torch.cat([batch, batch[-1:].expand(self.batch_size - n, *batch.shape[1:])])
            try:
                out = _floating(torch.as_tensor(self.predict(batch))[:n], self.source)
            except ModelError as err:  # the model's own error, reported by its worker
                raise ValueError(f"{self.source} failed on a batch of {len(batch)} images: {err}") from None
            parts.append(out.detach().float().cpu())
        outputs = torch.cat(parts)
        if outputs.shape != (len(images), self.num_outputs):
            raise ValueError(
                f"{self.source} returned outputs of shape {tuple(outputs.shape)} for {len(images)} images; "
                f"expected ({len(images)}, {self.num_outputs})"
            )
        return check_outputs(outputs, f"outputs of {self.source}")

    @classmethod
    def from_module(
        cls, module: torch.nn.Module, info: DatasetInfo, image_size: int = 32, *,
        form: Form | None = None, source: str = "module", batch_size: int = 500,
    ) -> BlackBox:
        """Wrap an ``nn.Module`` (eval mode, no gradients) and check it against ``info``."""
        module.eval()

        def predict(images: torch.Tensor) -> torch.Tensor:
            return module(images)

        return _checked(predict, None, info, image_size, form, source, batch_size, fixed_batch=False)


def own_images_info(task: Task = "multiclass") -> DatasetInfo:
    """What :func:`open_classifier` knows of a user's own images: nothing. Channels and K are then
    read from the model (an ONNX model's declared input, else a probe with 1, then 3 channels),
    and so is the image size where an ONNX model declares it."""
    return DatasetInfo(name="your own", num_outputs=0, channels=0, task=task, output_names=())


def open_classifier(
    path: Path | str, info: DatasetInfo, image_size: int = 32, *, form: Form | None = None, batch_size: int = 500,
    limits: SandboxLimits | None = None, unconfined: bool = False, trusted: bool = False,
) -> BlackBox:
    """A TorchScript file, an ONNX file or a run directory as a checked :class:`BlackBox`.

    ``form`` (logits or probabilities) is detected from the outputs when None. The model
    runs in a worker process confined by bubblewrap with ``limits`` (default
    :class:`SandboxLimits`); where no sandbox is available, TorchScript (code) is refused
    unless ``unconfined`` (then it runs with the resource limits only; ONNX and weights
    always may). ``trusted``: the caller trained this model itself (the calibration's
    references): it is loaded in this process. ``close()`` the box (or use it in a
    ``with`` block) to end the worker; it also ends with this process. ``info`` from
    :func:`own_images_info`: the model's input and K decide (the user's own images).

    Raises FileNotFoundError if nothing is at ``path``, ValueError if it is not a model,
    does not fit the dataset or hits a limit (:class:`~vicious.defences.sandbox.SandboxError`),
    ConfigError for a broken run directory.
    """
    path = Path(path)
    if form is not None and form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    _check_path_text(path)
    limits = limits or SandboxLimits()
    extra: dict[str, Path] = {}
    if not info.channels and (path.is_dir() or path.suffix == ".safetensors"):
        raise ValueError(f"{path} is weights of a vicious run, which are audited on the dataset they were trained on; "
                         "pass --data with its name (or export the classifier to ONNX to audit it on your images)")
    if path.is_dir():
        request, model_file, source = _run_request(path, info, image_size), _run_weights(path), f"run {path.name}"
        form = request["released"]
    elif not path.is_file():
        raise FileNotFoundError(f"no model at {path}; give a TorchScript (.pt) file, an ONNX (.onnx) file or a run directory")
    else:
        with path.open("rb") as file:
            head = file.read(4)
        if path.suffix == ".safetensors":
            request, source = _weights_request(path, info, image_size), f"weights {path.name}"
            form = request["released"]
        elif zipfile.is_zipfile(path):
            _check_torchscript_archive(path, limits)
            request, source = {"kind": "torchscript"}, f"TorchScript model {path.name}"
        elif head.startswith(_PICKLE_MAGIC):
            raise ValueError(f"{path} is a Python pickle, which is never loaded (it can run code); {_EXPORT_HINT}")
        else:
            request, source = {"kind": "onnx"}, f"ONNX model {path.name}"
            extra = _onnx_external_files(path, limits)
        model_file = path
    model = _start(request, model_file, path, source, limits, extra, unconfined=unconfined, trusted=trusted)
    try:
        declared, fixed = _onnx_input(model.meta, path) if request["kind"] == "onnx" else (None, 0)
        if fixed:
            return _checked(model, declared, info, image_size, form, source, fixed, fixed_batch=True)
        return _checked(model, declared, info, image_size, form, source, batch_size, fixed_batch=False)
    except BaseException:
        model.close()
        raise


_EXPORT_HINT = (
    "export the classifier with torch.jit.trace(model, example).save('model.pt') "
    "or torch.onnx.export(model, (example,), 'model.onnx', dynamo=True, external_data=False) (one file)"
)
_NO_SANDBOX_HINT = (
    "install bubblewrap (apt install bubblewrap) so that it runs confined, or pass --unconfined-model-code "
    "to run it with resource limits only, able to read and write whatever you can"
)
# What a model's error says when the sandbox kept it from a file.
_FILE_WORDS = ("no such file", "permission denied", "read-only file system", "file too large", "operation not permitted")


def _check_path_text(path: Path) -> None:
    """Refuse a path that is not UTF-8 (it could not even be printed in a message)."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the model path {ascii(raw)[1:]} is not valid UTF-8; rename it") from None


def _onnx_external_files(path: Path, limits: SandboxLimits) -> dict[str, Path]:
    """``{location: file}`` of the tensors an ONNX model keeps in other files: each must be
    a file in the model's folder (or below it), and all together fit the memory limit."""
    try:
        locations = external_locations(path)
    except (NotOnnx, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a model: neither a TorchScript archive nor an ONNX file ({_first_line(err)}); {_EXPORT_HINT}"
        ) from None
    if len(locations) > MAX_EXTERNAL_FILES:
        raise ValueError(f"{path} keeps its tensors in {len(locations)} other files, more than an export writes "
                         f"(at most {MAX_EXTERNAL_FILES}); the model is broken or hostile")
    folder, files, total = path.parent.resolve(), {}, path.stat().st_size
    for location in locations:
        relative = PurePosixPath(location)
        shown = printable(location, 100)
        if (relative.is_absolute() or ".." in relative.parts or not relative.parts or "\\" in location
                or not all(c.isprintable() for c in location) or not _utf8(location)):
            raise ValueError(f"{path} refers to {shown!r} for its tensors, outside its folder; the model is broken or hostile")
        file = folder.joinpath(*relative.parts)
        if not file.resolve().is_relative_to(folder):
            raise ValueError(f"{path} refers to {shown!r} for its tensors, a link out of its folder; copy the file there")
        if not file.is_file():
            raise ValueError(f"{path} keeps its tensors in {shown!r}, which is not a file next to it; copy it there, "
                             "or export the model as one file (torch.onnx.export(..., external_data=False))")
        size = file.stat().st_size
        if size < locations[location]:
            raise ValueError(f"{path} reads {locations[location]:,} bytes of tensors from {shown!r}, which holds "
                             f"{size:,}: a data file of another export; export the model again, as one file "
                             "(torch.onnx.export(..., external_data=False))")
        files[relative.as_posix()] = file
        total += size
    if total > limits.memory_bytes:
        raise ValueError(f"{path} and its data files take {format_bytes(total)}, more than the memory limit of "
                         f"{format_bytes(limits.memory_bytes)}; raise --memory-limit if it is legitimately that large")
    return files


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_torchscript_archive(path: Path, limits: SandboxLimits) -> None:
    """A TorchScript archive, bounded before anything unpacks it: member count, unpacked size."""
    try:
        with path.open("rb") as file:
            # The end record alone (read by zipfile's own helper) gives the member count,
            # before ZipFile builds an entry per member in memory.
            end = zipfile._EndRecData(file)
        if end and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ARCHIVE_MEMBERS:
            raise ValueError(f"{path} is a zip archive of {end[zipfile._ECD_ENTRIES_TOTAL]} members, more than "
                             f"a TorchScript model holds (at most {MAX_ARCHIVE_MEMBERS}); {_EXPORT_HINT}")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is a damaged zip archive ({_first_line(err)}); {_EXPORT_HINT}") from None
    names = [m.filename for m in members]
    # torch.save writes a zip too, but without TorchScript's code/ and constants.pkl.
    if not (any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)):
        raise ValueError(f"{path} is a zip archive but not a TorchScript model (a torch.save pickle?); {_EXPORT_HINT}")
    unpacked = sum(m.file_size for m in members)
    if unpacked > limits.memory_bytes:
        raise ValueError(f"{path} would unpack to {format_bytes(unpacked)}, more than the memory limit of "
                         f"{format_bytes(limits.memory_bytes)}; raise --memory-limit if it is legitimately that large")


def _run_weights(path: Path) -> Path:
    from vicious.runs.layout import CLASSIFIER_FILE

    return path / CLASSIFIER_FILE


def _weights_request(path: Path, info: DatasetInfo, image_size: int) -> dict[str, Any]:
    """A classifier weights file alone (``classifier.safetensors`` of a run): the architecture
    and output form from the file's metadata, validated as a config would be; channels and K
    from the auditor's dataset."""
    from pydantic import ValidationError

    from vicious.config.schema import ModelConfig, format_validation_error
    from vicious.runs.checkpoints import read_safetensors_metadata

    metadata = read_safetensors_metadata(path)
    missing = [k for k in ("dataset", "image_size", "classifier", "depth", "width", "output") if k not in metadata]
    if missing:
        raise ValueError(f"{path} does not record its architecture ({', '.join(missing)} missing: written by an older "
                         "vicious?); audit the run folder it belongs to instead")
    if metadata["dataset"] != info.name:
        raise ValueError(f"{path} was trained on {metadata['dataset']}, not {info.name}; "
                         f"audit it with --data {metadata['dataset']}")
    if metadata["image_size"] != str(image_size):
        raise ValueError(f"{path} was trained on {metadata['image_size']}-pixel images, not {image_size}; "
                         f"audit it with --image-size {metadata['image_size']}")
    if metadata["output"] not in ("raw", "softmax"):
        raise ValueError(f"{path} records output {metadata['output']!r}, neither raw nor softmax: not vicious weights")
    try:
        if not (metadata["depth"].isdigit() and metadata["width"].isdigit()):
            raise ValueError(f"depth {metadata['depth']!r} and width {metadata['width']!r} are not whole numbers")
        model = ModelConfig(classifier=metadata["classifier"], depth=int(metadata["depth"]), width=int(metadata["width"]))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        problem = format_validation_error(err) if isinstance(err, ValidationError) else str(err)
        raise ValueError(f"{path} records an architecture vicious cannot build: {problem}") from None
    _refuse_own_code(path, model.classifier)
    return {
        "kind": "run", "classifier": model.classifier, "depth": model.depth, "width": model.width,
        "channels": info.channels, "num_outputs": info.num_outputs, "task": info.task,
        "released": observed_form(metadata["output"]),
        "expect": {k: metadata[k] for k in ("dataset", "num_outputs", "channels", "image_size") if k in metadata},
    }


def _refuse_own_code(path: Path, classifier: str) -> None:
    """The audit runs a model confined, where a module of the user's own cannot be imported
    (and must not be: the weights' metadata may come from anyone)."""
    from vicious.models.own import is_own

    if is_own(classifier):
        raise ValueError(f"{path}'s classifier is code of your own ({classifier}), which the audit does not import; "
                         "export it with torch.onnx.export or torch.jit.script and audit that file")


def _run_request(path: Path, info: DatasetInfo, image_size: int) -> dict[str, Any]:
    """What the worker needs to rebuild a run's classifier: the architecture and output form
    from the run's config (read by the project's validating loader), channels and K from the
    auditor's dataset. The run's data settings (root, download) are never used."""
    from vicious.config.schema import ConfigError, load_config
    from vicious.runs.layout import CLASSIFIER_FILE, CONFIG_FILE, weights_metadata

    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE}); train one with 'vicious train'")
    config = load_config(path / CONFIG_FILE)
    if not (path / CLASSIFIER_FILE).is_file():
        raise ConfigError(f"{path} has no {CLASSIFIER_FILE}: training did not finish; resume it with 'vicious train --resume'")
    trained_on = config.data.name.strip().lower()
    trained_on = "celeba" if trained_on.startswith("celeba-k") else trained_on  # the registry's alias
    if trained_on != info.name:
        raise ValueError(f"{path} was trained on {trained_on}, not {info.name}; audit it with --data {config.data.name}")
    if config.data.image_size != image_size:
        raise ValueError(
            f"{path} was trained on {config.data.image_size}-pixel images, not {image_size}; "
            f"audit it with --image-size {config.data.image_size}"
        )
    _refuse_own_code(path, config.model.classifier)
    return {
        "kind": "run", "classifier": config.model.classifier, "depth": config.model.depth,
        "width": config.model.width, "channels": info.channels,
        "num_outputs": info.num_outputs, "task": info.task, "released": observed_form(config.output),
        # The metadata the weights must record (weights_metadata reads only splits.info).
        "expect": weights_metadata(config, types.SimpleNamespace(info=info)),
    }


def _start(request: dict[str, Any], model_file: Path, path: Path, source: str, limits: SandboxLimits,
           extra: dict[str, Path], *, unconfined: bool, trusted: bool):
    """The loaded model: in a worker (confined where bubblewrap works) or, if trusted, here."""
    kind = request["kind"]
    confined = False
    try:
        if trusted:
            return _InProcess(request, model_file)
        bwrap, reason = find_bwrap()
        if bwrap is None and kind == "torchscript" and not unconfined:
            raise ValueError(f"{path} is TorchScript, which runs its author's code, and no sandbox is available "
                             f"here ({reason}); {_NO_SANDBOX_HINT}")
        confined = bwrap is not None
        # Its own name: ONNX Runtime finds external data next to it by relative names.
        return ModelProcess(request, model_file, model_file.name, source, limits, bwrap, extra)
    except ModelError as err:
        text = f"{err}{_sandbox_note(str(err), confined)}"
        if kind == "torchscript":
            raise ValueError(f"{path} could not be read as TorchScript: {text}; {_EXPORT_HINT}") from None
        if kind == "onnx":
            raise ValueError(
                f"{path} is not a model: neither a TorchScript archive nor an ONNX file ({text}); {_EXPORT_HINT}"
            ) from None
        raise ValueError(text) from None


def _sandbox_note(text: str, confined: bool) -> str:
    if confined and any(word in text.lower() for word in _FILE_WORDS):
        return " (the model runs in a sandbox that lets it read only its own file and write nowhere)"
    return ""


class _InProcess:
    """A trusted model loaded here, with the worker's interface (``meta``, call, ``close``)."""

    def __init__(self, request: dict[str, Any], model_file: Path) -> None:
        try:
            self._predict, self.meta = model_formats.load(request, model_file)
        except Exception as err:  # the loaders raise many kinds; reported like the worker's
            raise ModelError(_first_line(err)) from None

    def __call__(self, images: torch.Tensor) -> Any:
        return self._predict(images)

    def close(self) -> None:
        pass


def _onnx_input(meta: dict[str, Any], path: Path) -> tuple[list[int | None], int]:
    """(declared input shape, static batch or 0) from what the worker's ONNX Runtime reported."""
    inputs = meta.get("inputs")
    if not (isinstance(inputs, list) and all(isinstance(i, dict) for i in inputs)):
        raise SandboxError(f"{path}: its worker described the model's inputs wrongly; the model is broken or hostile")
    if len(inputs) != 1:
        names = ", ".join(printable(i.get("name", "?"), 40) for i in inputs[:5]) + (", ..." if len(inputs) > 5 else "")
        raise ValueError(f"{path} takes {len(inputs)} inputs ({names}); a classifier takes one image batch")
    if not meta.get("outputs"):
        raise ValueError(f"{path} has no outputs; a classifier returns (N, K) scores")
    kind, shape = inputs[0].get("type"), inputs[0].get("shape")
    if kind != "tensor(float)":
        raise ValueError(f"{path} takes {printable(kind, 60)}; the audit feeds float32 images in [0, 1]")
    if not (isinstance(shape, list) and len(shape) <= 16):
        raise ValueError(f"{path} takes inputs of rank {len(shape) if isinstance(shape, list) else '?'}; "
                         "a classifier takes images (N, C, S, S)")
    declared = [d if isinstance(d, int) and not isinstance(d, bool) else None for d in shape]
    fixed = declared[0] if declared and declared[0] is not None and declared[0] > 0 else 0
    if fixed > MAX_STATIC_BATCH:
        raise ValueError(f"{path} declares a static batch of {fixed} images, more than the audit sends at once "
                         f"(at most {MAX_STATIC_BATCH}); export it with a dynamic batch dimension")
    return declared, fixed


def _floating(out: torch.Tensor, source: str) -> torch.Tensor:
    if not out.is_floating_point():
        raise ValueError(f"{source} returns {str(out.dtype).removeprefix('torch.')} outputs; a classifier returns "
                         "floating-point logits or probabilities, so it is not scored")
    return out


def _checked(predict, declared, info: DatasetInfo, image_size: int, form, source: str, batch_size: int, *, fixed_batch: bool) -> BlackBox:
    """Check a model's input and output shapes against the dataset (or, for the user's own
    images, read them from the model), then wrap it."""
    if declared is not None and len(declared) != 4:
        raise ValueError(f"{source} takes inputs of rank {len(declared)} {declared}; a classifier takes images (N, C, S, S)")
    if not info.channels:  # the user's own images: the model's declared input decides
        size = declared[2] if declared and declared[2] and declared[2] == declared[3] else image_size
        options = [declared[1]] if declared and declared[1] in (1, 3) else [1, 3]
        for i, channels in enumerate(options):
            try:
                return _checked(predict, declared, _with_channels(info, channels), size, form, source, batch_size,
                                fixed_batch=fixed_batch)
            except SandboxError:
                raise
            except ValueError:
                if i == len(options) - 1:
                    raise
    expected = (info.channels, image_size, image_size)
    if declared is not None:
        for got, want, what in zip(declared[1:], expected, ("channels", "height", "width")):
            if isinstance(got, int) and got != want:
                shown = ", ".join("?" if d is None else str(d) for d in declared[1:])
                raise ValueError(
                    f"{source} expects input (N, {shown}) but {info.name} images are "
                    f"(N, {', '.join(map(str, expected))}) ({what} differ); audit it with the dataset and --image-size it was trained on"
                )
    probe_size = batch_size if fixed_batch else 2
    if probe_size * info.channels * image_size * image_size * 4 > MAX_REPLY_BYTES:
        raise ValueError(f"{source} takes batches of {probe_size} images of {image_size}×{image_size} pixels, "
                         f"more than {format_bytes(MAX_REPLY_BYTES)} per batch; export it with a dynamic batch dimension")
    probe = torch.linspace(0, 1, probe_size * info.channels * image_size * image_size).view(probe_size, *expected)
    try:
        with torch.no_grad():
            out = torch.as_tensor(predict(probe))
    except SandboxError:  # a limit or a crash: its message is complete
        raise
    except Exception as err:  # whatever the model raises on a wrong input, report it in one line
        confined = isinstance(predict, ModelProcess) and predict.confined
        raise ValueError(
            f"{source} failed on {info.name} images of shape {tuple(probe.shape)}: {_first_line(err)}"
            f"{_sandbox_note(str(err), confined)}; check --data and --image-size"
        ) from None
    if out.ndim != 2 or out.shape[0] != probe_size:
        raise ValueError(f"{source} returned shape {tuple(out.shape)} for {probe_size} images; a classifier returns (N, K)")
    num_outputs = info.num_outputs or out.shape[1]  # 0: the user's own images, K from the model
    if out.shape[1] != num_outputs:
        raise ValueError(
            f"{source} gives {out.shape[1]} outputs per image but {info.name} has K = {info.num_outputs} "
            f"{'attributes' if info.task == 'multilabel' else 'classes'}; audit it with the dataset it was trained on"
        )
    out = check_outputs(_floating(out, source).float(), f"outputs of {source}")
    form = form or detect_form(out, info.task)
    return BlackBox(predict, expected, num_outputs, info.task, form, source, batch_size, fixed_batch)


def _with_channels(info: DatasetInfo, channels: int) -> DatasetInfo:
    return DatasetInfo(name=info.name, num_outputs=info.num_outputs, channels=channels, task=info.task,
                       output_names=info.output_names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
