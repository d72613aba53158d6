"""Other people's files can never run code here.

Weights and checkpoints load only as safetensors; a planted pickle is refused before
anything in it runs, whether offered through the command line or the Python API.
Dataset files that are pickles (CIFAR's official batches) are unpickled by
torchvision only after their md5 matches the official archive; archives are extracted
only when no member escapes the target folder. A static audit keeps it so.
"""

from __future__ import annotations

import ast
import gzip
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

import vicious
from vicious.cli import main
from vicious.data import load_dataset
from vicious.data.errors import DatasetCorruptError
from vicious.data.mnist import EMBEDDED_DIR
from vicious.models import create_model
from vicious.runs.checkpoints import UnsafeFileError, load_state, load_weights

SOURCE = Path(vicious.__file__).parent


class Planted:
    """Unpickling this runs a shell command that creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def planted_files(folder: Path) -> dict[str, bytes]:
    """Malicious files in the formats people pass around: pickles of every protocol, torch.save."""
    marker = folder / "planted-code-ran"
    files = {f"pickle-protocol-{p}": pickle.dumps(Planted(marker), protocol=p) for p in (0, 2, 5)}
    path = folder / "torch-save.bin"
    torch.save({"state_dict": Planted(marker)}, path)
    files["torch-save"] = path.read_bytes()
    return files


@pytest.mark.parametrize("target", ["classifier.safetensors", "decoder.safetensors"])
def test_planted_weights_are_refused_by_evaluate(run, tmp_path, capsys, target):
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("config.yaml", "classifier.safetensors", "decoder.safetensors"):
        (victim / name).write_bytes((run / name).read_bytes())
    for kind, data in planted_files(tmp_path).items():
        (victim / target).write_bytes(data)
        assert main(["evaluate", str(victim)]) == 2, kind
        err = capsys.readouterr().err
        assert err.startswith("vicious: error: ") and target in err and err.count("\n") == 1, kind
        assert "pickle" in err or "not a valid safetensors" in err, kind
    assert not (tmp_path / "planted-code-ran").exists()


def test_a_planted_checkpoint_is_refused_by_resume(run, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    last = victim / "checkpoints" / "joint" / "last.ckpt.safetensors"
    last.parent.mkdir(parents=True)
    for kind, data in planted_files(tmp_path).items():
        last.write_bytes(data)
        assert main(["train", "--out", str(victim), "--resume", "--no-evaluate"]) == 2, kind
        assert "last.ckpt" in capsys.readouterr().err, kind
    assert not (tmp_path / "planted-code-ran").exists()


def test_planted_files_are_refused_by_the_python_api(tmp_path):
    model = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10)
    for kind, data in planted_files(tmp_path).items():
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(data)
        with pytest.raises(UnsafeFileError):
            load_weights(model, path)
        with pytest.raises(UnsafeFileError):
            load_state(path)
    assert not (tmp_path / "planted-code-ran").exists()


def test_planted_cifar_batches_are_refused_before_unpickling(tmp_path, cache):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(Planted(tmp_path / "planted-code-ran")))
    with pytest.raises(DatasetCorruptError, match="md5 checksum mismatch for data_batch_1"):
        load_dataset("cifar10", root=tmp_path / "data")
    assert not (tmp_path / "planted-code-ran").exists()


def _fashion_mnist_raw(folder: Path) -> None:
    """The embedded Fashion-MNIST subset as torchvision's uncompressed raw/ files."""
    embedded = EMBEDDED_DIR
    folder.mkdir(parents=True)
    for gz in embedded.glob("*-ubyte.gz"):
        (folder / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_legacy_mnist_files_never_run_code(tmp_path, cache):
    # torchvision's MNIST prefers legacy processed/{training,test}.pt files when they
    # exist and reads them with torch.load(weights_only=True): a restricted unpickler.
    _fashion_mnist_raw(tmp_path / "data" / "FashionMNIST" / "raw")
    processed = tmp_path / "data" / "FashionMNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(pickle.dumps(Planted(tmp_path / "planted-code-ran")))
    with pytest.raises(Exception):  # noqa: B017 - the point is only that nothing runs
        load_dataset("fashion-mnist", root=tmp_path / "data")
    assert not (tmp_path / "planted-code-ran").exists()


def test_legacy_mnist_pickles_are_refused_with_a_clear_error(tmp_path, cache):
    _fashion_mnist_raw(tmp_path / "data" / "FashionMNIST" / "raw")
    processed = tmp_path / "data" / "FashionMNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save((torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)), processed / name)
    # Neither run code nor silently replace the raw data with what the .pt files hold.
    with pytest.raises(DatasetCorruptError, match="processed"):
        load_dataset("fashion-mnist", root=tmp_path / "data")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def test_a_crafted_celeba_archive_is_refused(tmp_path, cache, capsys):
    # An img_align_celeba.zip left in the data folder is extracted on first use (no
    # md5 known for it); a member escaping the folder must stop that.
    folder = tmp_path / "data" / "celeba"
    folder.mkdir(parents=True)
    _zip(folder / "img_align_celeba.zip", {"img_align_celeba/000001.jpg": b"jpeg",
                                           "img_align_celeba/../../../escaped.txt": b"owned"})
    assert main(["train", "--preset", "celeba-k1-vicious-small", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "refusing member 'img_align_celeba/../../../escaped.txt'" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("escaped.txt")) and not (folder / "img_align_celeba").exists()


def test_a_crafted_tinyimagenet_archive_is_refused_before_extraction(tmp_path, cache):
    _zip(tmp_path / "tiny-imagenet-200.zip", {"../escaped.txt": b"owned"})
    with pytest.raises(DatasetCorruptError, match="md5"):
        load_dataset("tinyimagenet", root=tmp_path)
    assert not list(tmp_path.parent.rglob("escaped.txt"))


# -- static audit ------------------------------------------------------------------

_FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"),
    ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
    ("joblib", "load"), ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"),
    ("torch", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
    ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def test_no_source_file_unpickles_anything():
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "cloudpickle", "marshal"):
                problems.append(f"{path.relative_to(SOURCE)}:{node.lineno}: from {node.module} import ...")
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{path.relative_to(SOURCE)}:{node.lineno}: {name}(...)"
            if tuple(name.rsplit(".", 1)[-2:]) in _FORBIDDEN:
                problems.append(where)
            if name in ("np.load", "numpy.load"):
                allow = [k for k in node.keywords if k.arg == "allow_pickle"]
                if not (allow and isinstance(allow[0].value, ast.Constant) and allow[0].value.value is False):
                    problems.append(f"{where} without allow_pickle=False")
    assert not problems, "loading that can unpickle:\n" + "\n".join(problems)
