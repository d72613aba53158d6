"""A user's classifier as a black box: images in, outputs out.

Every detector sees a classifier only through :class:`BlackBox`, a callable
``images (N, C, S, S) float in [0, 1] -> outputs (N, K) float32``. One adapter per
format builds it:

* a TorchScript file (``torch.jit.save``), read by TorchScript's own loader;
* an ONNX file, run through ONNX Runtime;
* a run directory of this project (``vicious train``), whose ``softmax`` runs
  release probabilities and ``raw`` runs logits.

Pickles are never loaded: a ``torch.save`` file is refused by name before any
loader touches it. :func:`open_classifier` checks the model against the dataset
(input ``(C, S, S)``, output size K) and fails with one line naming the mismatch.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vicious.data import DatasetInfo
from vicious.defences.outputs import FORMS, Form, Task, check_outputs, detect_form, observed_form
from vicious.models import outputs_to_probabilities

_PICKLE_MAGIC = (b"\x80", b"(", b"}", b"]")  # pickle protocols 2-5, and 0/1 containers


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
            out = torch.as_tensor(self.predict(batch))[:n]
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


def open_classifier(
    path: Path | str, info: DatasetInfo, image_size: int = 32, *, form: Form | None = None, batch_size: int = 500,
) -> BlackBox:
    """A TorchScript file, an ONNX file or a run directory as a checked :class:`BlackBox`.

    ``form`` (logits or probabilities) is detected from the outputs when None.
    Raises FileNotFoundError if nothing is at ``path``, ValueError if it is not a
    model or does not fit the dataset, ConfigError for a broken run directory.
    """
    path = Path(path)
    if form is not None and form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if path.is_dir():
        return _open_run(path, info, image_size, batch_size)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}; give a TorchScript (.pt) file, an ONNX (.onnx) file or a run directory")
    with path.open("rb") as file:
        head = file.read(4)
    if zipfile.is_zipfile(path):
        predict, declared, source = _load_torchscript(path), None, f"TorchScript model {path.name}"
    elif head.startswith(_PICKLE_MAGIC):
        raise ValueError(f"{path} is a Python pickle, which is never loaded (it can run code); {_EXPORT_HINT}")
    else:
        predict, declared, fixed = _load_onnx(path)
        source = f"ONNX model {path.name}"
        if fixed:
            return _checked(predict, declared, info, image_size, form, source, fixed, fixed_batch=True)
    return _checked(predict, declared, info, image_size, form, source, batch_size, fixed_batch=False)


_EXPORT_HINT = (
    "export the classifier with torch.jit.trace(model, example).save('model.pt') "
    "or torch.onnx.export(model, (example,), 'model.onnx', dynamo=True)"
)


def _load_torchscript(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    names = zipfile.ZipFile(path).namelist()
    # torch.save writes a zip too, but without TorchScript's code/ and constants.pkl.
    if not (any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)):
        raise ValueError(f"{path} is a zip archive but not a TorchScript model (a torch.save pickle?); {_EXPORT_HINT}")
    try:
        with warnings.catch_warnings():  # TorchScript's deprecation notice is not the user's problem here
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # TorchScript raises RuntimeError subclasses of many kinds
        raise ValueError(f"{path} could not be read as TorchScript: {_first_line(err)}; {_EXPORT_HINT}") from None
    module.eval()
    return module


def _load_onnx(path: Path):
    """(predict, declared input shape or None, fixed batch size or 0)."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own exception types
        raise ValueError(
            f"{path} is not a model: neither a TorchScript archive nor an ONNX file ({_first_line(err)}); {_EXPORT_HINT}"
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ValueError(f"{path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a classifier takes one image batch")
    if inputs[0].type != "tensor(float)":
        raise ValueError(f"{path} takes {inputs[0].type}; the audit feeds float32 images in [0, 1]")
    declared = list(inputs[0].shape)
    fixed = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else 0
    name, output_name = inputs[0].name, outputs[0].name

    def predict(images: torch.Tensor) -> torch.Tensor:
        (result,) = session.run([output_name], {name: np.ascontiguousarray(images.numpy(), dtype=np.float32)})
        return torch.from_numpy(result)

    return predict, declared, fixed


def _open_run(path: Path, info: DatasetInfo, image_size: int, batch_size: int) -> BlackBox:
    from vicious.experiments.runs import open_run

    run = open_run(path)
    if run.splits.info.name != info.name:
        raise ValueError(f"{path} was trained on {run.splits.info.name}, not {info.name}; audit it with --data {run.splits.info.name}")
    if run.config.data.image_size != image_size:
        raise ValueError(
            f"{path} was trained on {run.config.data.image_size}-pixel images, not {image_size}; "
            f"audit it with --image-size {run.config.data.image_size}"
        )
    classifier, task = run.classifier.eval(), run.splits.info.task
    released = observed_form(run.config.output)

    def predict(images: torch.Tensor) -> torch.Tensor:
        logits = classifier(images)
        return outputs_to_probabilities(logits, task) if released == "probabilities" else logits

    return _checked(predict, None, info, image_size, released, f"run {path.name}", batch_size, fixed_batch=False)


def _checked(predict, declared, info: DatasetInfo, image_size: int, form, source: str, batch_size: int, *, fixed_batch: bool) -> BlackBox:
    """Check a model's input and output shapes against the dataset, then wrap it."""
    expected = (info.channels, image_size, image_size)
    if declared is not None:
        if len(declared) != 4:
            raise ValueError(f"{source} takes inputs of rank {len(declared)} {declared}; a classifier takes images (N, C, S, S)")
        for got, want, what in zip(declared[1:], expected, ("channels", "height", "width")):
            if isinstance(got, int) and got != want:
                raise ValueError(
                    f"{source} expects input (N, {', '.join(map(str, declared[1:]))}) but {info.name} images are "
                    f"(N, {', '.join(map(str, expected))}) ({what} differ); audit it with the dataset and --image-size it was trained on"
                )
    probe_size = batch_size if fixed_batch else 2
    probe = torch.linspace(0, 1, probe_size * info.channels * image_size * image_size).view(probe_size, *expected)
    try:
        with torch.no_grad():
            out = torch.as_tensor(predict(probe))
    except Exception as err:  # whatever the model raises on a wrong input, report it in one line
        raise ValueError(
            f"{source} failed on {info.name} images of shape {tuple(probe.shape)}: {_first_line(err)}; "
            "check --data and --image-size"
        ) from None
    if out.ndim != 2 or out.shape[0] != probe_size:
        raise ValueError(f"{source} returned shape {tuple(out.shape)} for {probe_size} images; a classifier returns (N, K)")
    if out.shape[1] != info.num_outputs:
        raise ValueError(
            f"{source} gives {out.shape[1]} outputs per image but {info.name} has K = {info.num_outputs} "
            f"{'attributes' if info.task == 'multilabel' else 'classes'}; audit it with the dataset it was trained on"
        )
    out = check_outputs(out.float(), f"outputs of {source}")
    form = form or detect_form(out, info.task)
    return BlackBox(predict, expected, info.num_outputs, info.task, form, source, batch_size, fixed_batch)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
