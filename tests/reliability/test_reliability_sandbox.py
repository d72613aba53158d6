"""A hostile model under audit harms nothing: it runs sandboxed, within limits.

Each model here is built as a server bent on harm would build it: TorchScript that writes
a file of the user's (in ``forward``, or at load time in ``__setstate__``), reads one,
loops for ever, allocates without end, returns integers or too many values, an archive
that inflates far beyond its size, and an ONNX model with an absurd static batch. Each
audit must end with exit status 2 and one line naming the cause, and the victim file,
outside every folder the audit was given, must be byte-identical afterwards. Where no
sandbox is available, TorchScript is refused unless the user says it may run unconfined.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import warnings
import zipfile
from pathlib import Path
from typing import Tuple  # noqa: UP035 - TorchScript's own annotations

import pytest
import torch
import yaml

from vicious.cli import main
from vicious.data import DatasetInfo
from vicious.defences import SuiteSettings, open_classifier
from vicious.defences.calibration import Calibration, Reference
from vicious.defences.sandbox import find_bwrap

SECRET = b"the user's own bytes, not the model's\n"
TINY = SuiteSettings(num_images=64, sensitivity_images=16, shadow_epochs=2, shadow_hidden=16)
HONEST = {
    "output_statistics": {"logit_norm": [1.9, 2.1, 2.0]},
    "sensitivity": {"within_class_contrast": [4.0, 4.4, 4.2]},
    "excess_leakage": {"psnr_gap": [1.5, 1.8, 1.6]},
}

FASHION = DatasetInfo("fashion-mnist", 10, 1, "multiclass", tuple(f"class {i}" for i in range(10)))

needs_sandbox = pytest.mark.skipif(find_bwrap()[0] is None, reason=f"no sandbox here: {find_bwrap()[1]}")


class Writer(torch.nn.Module):
    """Overwrites 8 bytes of ``victim`` through a shared memory map, in every forward."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x):
        t = torch.from_file(self.victim, shared=True, size=8, dtype=torch.uint8)
        t.fill_(65)
        return torch.zeros(x.shape[0], 10) + t[0].float() * 0.0  # uses t: TorchScript keeps the write


class LoadWriter(torch.nn.Module):
    """Overwrites ``victim`` when loaded: TorchScript runs ``__setstate__`` before any check."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim
        self.mark = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:  # noqa: UP006
        return (self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:  # noqa: UP006
        self.victim = state[0]
        self.training = state[1]
        t = torch.from_file(state[0], shared=True, size=8, dtype=torch.uint8)
        t.fill_(66)
        self.mark = t[:1].float()

    def forward(self, x):
        return torch.zeros(x.shape[0], 10) + self.mark * 0.0


class Reader(torch.nn.Module):
    """Returns outputs made of the bytes of ``victim`` (e.g. /etc/passwd)."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x):
        t = torch.from_file(self.victim, shared=False, size=10, dtype=torch.uint8).float()
        return t.expand(x.shape[0], 10) + x.mean()


class Loop(torch.nn.Module):
    def forward(self, x):
        y = x.sum()
        while bool(y > -1.0):
            y = y + 1.0
        return torch.zeros(x.shape[0], 10) + y


class Hog(torch.nn.Module):
    def forward(self, x):
        big = torch.ones(1 << 34)  # 64 GiB
        return torch.zeros(x.shape[0], 10) + big[0]


class Integers(torch.nn.Module):
    def forward(self, x):
        return (x.flatten(1)[:, :10] * 100).long()


class Wide(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 200_000)


class Honest(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * 3.0


def export_onnx(path: Path, *, dynamic: bool = True) -> Path:
    """A small honest convolutional classifier for 1×32×32 images as ONNX (batch 4 if static)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 15 * 15, 10)).eval()
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(4, 1, 32, 32),), str(path), dynamo=True, dynamic_shapes=shapes,
                          verbose=False)
    return path


def script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def victim(tmp_path):
    """A file of the user's outside every folder the audit is given."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def audit(tmp_path, capsys):
    """``audit(model, *flags)`` -> (exit status, stderr) of ``vicious audit`` with a tiny calibration."""
    refs = [Reference(name=f"honest-{i}", accuracy=0.8) for i in range(3)]
    calibration = tmp_path / "calibration.json"
    Calibration.from_scores("fashion-mnist", 32, TINY, HONEST, refs).save(calibration)

    def run(model: Path, *flags: str) -> tuple[int, str]:
        capsys.readouterr()
        status = main(["audit", str(model), "--data", "fashion-mnist", "--calibration", str(calibration),
                       "--out", str(tmp_path / "out"), *flags])
        return status, capsys.readouterr().err

    return run


def refused(result: tuple[int, str], *words: str) -> str:
    status, err = result
    assert status == 2, err
    assert err.startswith("vicious: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def test_the_hostile_models_are_hostile(tmp_path):
    """The writers do write when loaded without the sandbox (a scratch file, here): the
    tests below would prove nothing if TorchScript dropped the write."""
    scratch = tmp_path / "scratch"
    for module, marker in ((Writer, b"A" * 8), (LoadWriter, b"B" * 8)):
        scratch.write_bytes(SECRET)
        loaded = torch.jit.load(str(script(module(str(scratch)), tmp_path / "m.pt")))
        loaded(torch.zeros(2, 1, 32, 32))
        assert scratch.read_bytes() == marker + SECRET[8:]


@needs_sandbox
@pytest.mark.parametrize("hostile", ["forward", "load"])
def test_a_model_cannot_write_the_users_files(models, victim, audit, hostile):
    model = script((Writer if hostile == "forward" else LoadWriter)(str(victim)), models / "writer.pt")
    refused(audit(model), "No such file", "sandbox that lets it read only its own file")
    assert victim.read_bytes() == SECRET


@needs_sandbox
@pytest.mark.parametrize("target", ["victim", "/etc/passwd"])
def test_a_model_cannot_read_the_users_files(models, victim, audit, target):
    model = script(Reader(str(victim) if target == "victim" else target), models / "reader.pt")
    refused(audit(model), "failed on fashion-mnist images", "No such file")
    assert victim.read_bytes() == SECRET


@needs_sandbox
def test_an_endless_model_is_stopped_at_the_time_limit(models, victim, audit):
    refused(audit(script(Loop(), models / "loop.pt"), "--time-limit", "3"), "exceeded 3 s (wall time)", "--time-limit")
    assert victim.read_bytes() == SECRET


@needs_sandbox
def test_a_model_is_stopped_at_the_cpu_limit(models, audit):
    # The CPU seconds count from the worker's start: importing torch takes one or two.
    refused(audit(script(Loop(), models / "loop.pt"), "--cpu-limit", "4", "--time-limit", "120"),
            "used more than 4 s of CPU time", "--cpu-limit")


def test_a_worker_that_dies_is_reported_in_one_line(models):
    box = open_classifier(script(Honest(), models / "honest.pt"), FASHION, unconfined=True)
    worker = box.predict._worker.process
    os.kill(worker.pid, signal.SIGKILL)  # as a crash of the model's process would
    # Under bubblewrap the killed process is bwrap; the model's own process dies with it a moment
    # later (--die-with-parent) and only then closes its end of the pipe: wait for that, so that
    # the batch below meets a dead worker rather than racing its last moment.
    assert select.select([worker.stdout], [], [], 30)[0], "the worker outlived its parent"
    with pytest.raises(ValueError, match=r"honest.pt: its worker process ended \(signal SIGKILL\) on a batch"):
        box(torch.rand(3, 1, 32, 32))


@needs_sandbox
def test_a_model_cannot_take_more_memory_than_the_limit(models, victim, audit):
    refused(audit(script(Hog(), models / "hog.pt"), "--memory-limit", "4G"),
            "tried to use more than 4 GiB of memory", "--memory-limit")
    assert victim.read_bytes() == SECRET


def test_an_archive_that_would_inflate_past_the_memory_limit_is_refused_unopened(models, victim, audit):
    bomb = script(Honest(), models / "bomb.pt")
    prefix = zipfile.ZipFile(bomb).namelist()[0].split("/")[0]
    with (zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
          archive.open(f"{prefix}/data/999", "w", force_zip64=True) as member):
        for _ in range(40):  # 640 MiB of zeros, ~3 MB on disk
            member.write(bytes(16 << 20))
    assert bomb.stat().st_size < 8 << 20
    refused(audit(bomb, "--memory-limit", "512M"), "would unpack to 640 MiB", "memory limit of 512 MiB")
    assert victim.read_bytes() == SECRET


@needs_sandbox
@pytest.mark.parametrize("module, words", [
    (Integers, ("returns int64 outputs", "not scored")),
    (Wide, ("more than any classifier gives",)),
])
def test_outputs_that_are_not_a_classifiers_are_refused(models, audit, module, words):
    refused(audit(script(module(), models / "odd.pt")), *words)


def test_an_onnx_model_with_an_absurd_static_batch_is_refused_before_allocating(tmp_path, models, victim, audit):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(export_onnx(tmp_path / "static.onnx", dynamic=False)))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 100_000_000  # 400 GB per probe batch
    onnx.save(model, str(models / "huge.onnx"))
    refused(audit(models / "huge.onnx"), "declares a static batch of 100000000 images")
    assert victim.read_bytes() == SECRET


def test_an_onnx_model_pointing_at_a_file_outside_its_folder_is_refused(tmp_path, models, victim, audit):
    onnx = pytest.importorskip("onnx")
    onnx.save(onnx.load(str(export_onnx(tmp_path / "leak.onnx"))), str(models / "leak.onnx"),
              save_as_external_data=True, location="leak.data", size_threshold=0)
    model = onnx.load(str(models / "leak.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:  # what onnx.save itself refuses to write
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = f"../elsewhere/{victim.name}"
    (models / "leak.onnx").write_bytes(model.SerializeToString())
    refused(audit(models / "leak.onnx"), "outside its folder")
    assert victim.read_bytes() == SECRET


def test_a_model_path_that_is_not_utf8_is_refused_in_one_line(models, audit):
    path = Path(os.fsdecode(os.fsencode(models) + b"/model-\xff.pt"))
    shutil.copy(script(Honest(), models / "honest.pt"), path)
    refused(audit(path), "is not valid UTF-8")


@pytest.fixture
def no_sandbox(monkeypatch):
    monkeypatch.setenv("VICIOUS_BWRAP", "none")


def test_without_a_sandbox_torchscript_is_refused_with_the_fix(no_sandbox, models, audit):
    err = refused(audit(script(Honest(), models / "honest.pt")), "no sandbox is available here",
                  "apt install bubblewrap", "--unconfined-model-code")
    assert "Traceback" not in err


def test_without_a_sandbox_the_user_may_run_torchscript_unconfined_within_the_limits(no_sandbox, models, audit):
    status, err = audit(script(Honest(), models / "honest.pt"), "--unconfined-model-code")
    assert status == 0, err
    refused(audit(script(Hog(), models / "hog.pt"), "--unconfined-model-code", "--memory-limit", "4G"),
            "tried to use more than 4 GiB of memory")


def test_without_a_sandbox_onnx_runs_within_the_limits(no_sandbox, models, audit):
    status, err = audit(export_onnx(models / "model.onnx"))
    assert status == 0, err


def test_a_run_folder_is_audited_with_the_auditors_data_settings(run, tmp_path, audit):
    """A run's config.yaml names a data.root (and download) of its author's: never used."""
    copy = tmp_path / "their-run"
    copy.mkdir()
    for name in ("config.yaml", "classifier.safetensors", "decoder.safetensors"):
        shutil.copy(run / name, copy / name)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    theirs = tmp_path / "authors-data"
    config["data"].update(root=str(theirs), download=True)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    refused(audit(copy, "--data-root", str(tmp_path / "my-data")), "my-data")  # the auditor's root, missing
    status, err = audit(copy)  # the auditor's default places
    assert status == 0, err
    assert not theirs.exists()
