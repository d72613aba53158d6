"""Hostile files in a run, sweep or data folder stay harmless.

Each test builds one file as a hostile user would (a checkpoint whose paths escape its
folder, a planted symlink, an archive writing through a link or inflating past the cap,
a folder another process writes) and checks three things: the exit status (2), the one
line on stderr, and that a victim file outside every folder vicious was given is still
there, byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from reliability_helpers import ONE_EPOCH, kill_when_hung, launch
from safetensors.torch import save as save_safetensors_bytes

import vicious
from vicious.cli import main
from vicious.data import safe_extract
from vicious.data.archives import ArchiveTooLargeError
from vicious.runs.checkpoints import UnsafeFileError, load_state, save_state
from vicious.runs.files import check_writable
from vicious.runs.locks import HOLDER_FILE, LOCK_FILE, folder_lock, holder
from vicious.studies.sweep import cell_state

RESUME = ["train", "--resume", "--no-evaluate", "--out"]
PRESET = "fashion-mnist-vicious-small"
# ONE_EPOCH as a grid's `set`, so that a sweep's cell has the config of the `run` fixture.
ONE_EPOCH_SET = {ONE_EPOCH[i + 1].split("=")[0]: yaml.safe_load(ONE_EPOCH[i + 1].split("=")[1])
                 for i in range(0, len(ONE_EPOCH), 2)}


class Victim:
    """A file outside every folder vicious is given, and what it must still hold."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "victim-home"
        self.folder.mkdir()
        self.path = self.folder / "important"
        self.data = os.urandom(64)
        self.path.write_bytes(self.data)

    def intact(self) -> bool:
        return self.path.is_file() and self.path.read_bytes() == self.data and os.listdir(self.folder) == ["important"]


@pytest.fixture
def victim(tmp_path) -> Victim:
    return Victim(tmp_path)


def one_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("vicious: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A 2-epoch run killed in its second epoch: resuming it trains on and saves checkpoints,
    which is when Lightning deletes the files its checkpoint state names."""
    folder = tmp_path_factory.mktemp("interrupted")
    process = launch(["train", "--preset", PRESET, *ONE_EPOCH, "--set", "train.epochs=2", "--out",
                      str(folder / "run"), "--no-evaluate"], folder, hang_at="batch:joint:1:0")
    kill_when_hung(process)
    assert (folder / "run" / "checkpoints" / "joint" / "last.ckpt.safetensors").is_file()
    return folder / "run"


def unfinished_copy(run: Path, folder: Path) -> Path:
    """A copy of a run whose phase must be resumed from its last.ckpt."""
    copy = shutil.copytree(run, folder)
    (copy / "checkpoints" / "joint" / "selected.safetensors").unlink(missing_ok=True)
    return copy


def tamper(path: Path, change) -> None:
    state = load_state(path)
    change(state)
    save_state(state, path)


def checkpoint_callback(state: dict) -> dict:
    (name,) = [k for k in state["callbacks"] if k.startswith("_MovableCheckpoint")]
    return state["callbacks"][name]


# -- checkpoints naming files outside their folder ------------------------------------------


def escape_to(victim: Victim, last: Path, state: dict, kind: str) -> None:
    """Make the checkpoint state name the victim, as Lightning's own bookkeeping would name a checkpoint."""
    escape = f"{os.path.realpath(last.parent)}/{'../' * (len(last.parent.relative_to(victim.folder.parent).parts))}"
    escape += f"{victim.folder.name}/important"
    callback = checkpoint_callback(state)
    if kind == "last":  # replaced (so deleted) by the next last.ckpt
        callback["last_model_path"] = escape
    else:  # the best so far, and so badly scored that the next epoch replaces it
        worst = torch.tensor(1e9)
        callback.update(best_k_models={escape: worst}, kth_best_model_path=escape, best_model_path=escape,
                        best_model_score=worst, kth_value=worst)


@pytest.mark.parametrize("kind", ["last", "best"])
def test_a_checkpoint_whose_paths_escape_its_folder_is_refused(interrupted, tmp_path, capsys, victim, kind):
    # Before the fix each resumed, trained its second epoch, deleted the victim and exited 0.
    copy = unfinished_copy(interrupted, tmp_path / "run")
    last = copy / "checkpoints" / "joint" / "last.ckpt.safetensors"
    tamper(last, lambda state: escape_to(victim, last, state, kind))
    assert main([*RESUME, str(copy)]) == 2
    one_line(capsys, f"{last}: its checkpoint state names", "victim-home/important", "is not a checkpoint file in",
             "altered")
    assert victim.intact()


def test_a_moved_checkpoint_naming_a_file_beside_the_run_is_refused(interrupted, tmp_path, capsys, victim):
    # Rewritten for a moved folder, a path that started in the old folder and climbs out
    # of it must still be refused (here it names a file the old folder's parent holds).
    copy = unfinished_copy(interrupted, tmp_path / "run")
    last = copy / "checkpoints" / "joint" / "last.ckpt.safetensors"

    def from_elsewhere(state):
        old = "/elsewhere/run/checkpoints/joint"
        callback = checkpoint_callback(state)
        callback.update(dirpath=old, best_model_path=f"{old}/best.ckpt.safetensors", last_model_path=f"{old}/last.ckpt.safetensors",
                        best_k_models={f"{old}/best.ckpt.safetensors": 0.5},
                        kth_best_model_path=f"{old}/../../../{victim.folder.name}/important")

    tamper(last, from_elsewhere)
    assert main([*RESUME, str(copy)]) == 2
    one_line(capsys, f"/../../../{victim.folder.name}/important", "is not a checkpoint file in")
    assert victim.intact()


def test_a_sweep_resuming_such_a_cell_records_the_refusal(interrupted, tmp_path, capsys, victim):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"preset": PRESET, "set": {**ONE_EPOCH_SET, "train.epochs": 2}}))
    out = tmp_path / "sweep"
    cell = unfinished_copy(interrupted, out / PRESET)  # the grid's one cell, killed in its second epoch
    last = cell / "checkpoints" / "joint" / "last.ckpt.safetensors"
    tamper(last, lambda state: escape_to(victim, last, state, "best"))
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    one_line(capsys, "1 of 1 cells failed", "status.json holds the error")
    status = json.loads((cell / "status.json").read_text())
    assert status["state"] == "failed" and "is not a checkpoint file in" in status["error"]
    assert victim.intact()


# -- crafted checkpoint structures --------------------------------------------------------


def crafted(path: Path, structure: str, tensors: dict | None = None) -> Path:
    metadata = {"vicious_structure": structure, "vicious_version": vicious.__version__}
    path.write_bytes(save_safetensors_bytes(tensors or {"t0": torch.zeros(1)}, metadata=metadata))
    return path


@pytest.mark.parametrize("structure, problem", [
    ('{"__dict__": {"state_dict": {"__tensor__": "t9"}}}', "tensor 't9' the file does not hold"),
    ('{"__dict__": {"state_dict": {"__tensor__": [1]}}}', "tensor of type list"),
    ("[" * 100_000 + "]" * 100_000, "unreadable structure"),
    ("[" * 200 + "]" * 200, "nesting deeper than 64"),
    ('{"__items__": [[[1, [2]], 3]]}', "neither a scalar nor a list of scalars"),
    ('{"__items__": [[1, 2, 3]]}', "not a [key, value] pair"),
    ('{"__dict__": [1, 2]}', "unrecognised entry '__dict__' holding list"),
    ('{"a": 1, "b": 2}', "unrecognised entry"),
])
def test_crafted_checkpoint_structures_are_refused_in_one_line(tmp_path, structure, problem):
    path = crafted(tmp_path / "last.ckpt", structure)
    with pytest.raises(UnsafeFileError, match="damaged or was altered") as error:
        load_state(path)
    assert problem in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update(state_dict=[1, 2]), "state_dict is list, not dict"),
    (lambda s: s["state_dict"].pop("classifier.stem.weight"), "state_dict lacks ['classifier.stem.weight']"),
    (lambda s: s["state_dict"].update({"classifier.stem.weight": torch.zeros(2)}), "has shape (2,)"),
    (lambda s: s.update(optimizer_states=[{"state": 3}]), "optimizer_states[0] is not an optimizer state"),
    (lambda s: s["loops"]["fit_loop"].update({"epoch_progress": {"total": "many"}}), "not a counter"),
    (lambda s: s.pop("epoch"), "epoch is missing"),
    (lambda s: checkpoint_callback(s).update(best_model_path=["x"]), "names a list as a checkpoint path"),
    (lambda s: checkpoint_callback(s).update(best_model_score="best"), "holds a str as best_model_score"),
])
def test_a_crafted_training_state_is_refused_by_resume(run, tmp_path, capsys, change, problem):
    copy = unfinished_copy(run, tmp_path / "run")
    tamper(copy / "checkpoints" / "joint" / "last.ckpt.safetensors", change)
    assert main([*RESUME, str(copy)]) == 2
    one_line(capsys, "last.ckpt", problem)


def test_a_crafted_structure_is_refused_by_resume(run, tmp_path, capsys):
    copy = unfinished_copy(run, tmp_path / "run")
    crafted(copy / "checkpoints" / "joint" / "last.ckpt.safetensors", '{"__dict__": {"epoch": {"__tensor__": "t7"}}}')
    assert main([*RESUME, str(copy)]) == 2
    one_line(capsys, "last.ckpt.safetensors is damaged or was altered", "'t7'")


# -- planted symlinks ---------------------------------------------------------------------


@pytest.mark.parametrize("link", [".write-test", ".lock", "checkpoints/joint", "logs"])
def test_a_symlink_planted_in_a_run_folder_is_refused(run, tmp_path, capsys, victim, link):
    copy = unfinished_copy(run, tmp_path / "run")
    planted = copy / link
    if planted.is_dir():
        shutil.rmtree(planted)
    planted.unlink(missing_ok=True)  # the run's own .lock
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(victim.path if link.startswith(".") else victim.folder)
    assert main([*RESUME, str(copy)]) == 2
    one_line(capsys, str(planted), "symbolic link")
    assert victim.intact() and planted.is_symlink()


def test_the_write_probe_never_follows_a_planted_link(tmp_path, victim):
    # Sweeps, demos and audits probe their folders too (check_writable).
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".write-test").symlink_to(victim.path)
    check_writable(folder)
    assert victim.intact() and sorted(os.listdir(folder)) == [".write-test"]


# -- archives -----------------------------------------------------------------------------


def zip_file(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_a_zip_member_through_a_symlink_in_the_data_folder_is_refused(tmp_path, cache, capsys, victim):
    # CelebA's zip is extracted where it lies; a link already there must not carry a member out.
    folder = tmp_path / "data" / "celeba"
    folder.mkdir(parents=True)
    (folder / "extras").symlink_to(victim.folder)
    zip_file(folder / "img_align_celeba.zip", {"img_align_celeba/000001.jpg": b"jpeg", "extras/important": b"owned"})
    assert main(["train", "--preset", "celeba-k1-vicious-small", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run")]) == 2
    one_line(capsys, "refusing member 'extras/important'", f"through the symlink {folder / 'extras'}")
    assert victim.intact() and not (folder / "img_align_celeba").exists()


def test_a_tar_member_through_a_symlink_is_refused_before_anything_is_written(tmp_path, victim):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "extras").symlink_to(victim.folder)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("fine.txt", "extras/important"):
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"owned"))
    with pytest.raises(ValueError, match="refusing member 'extras/important'.*symlink"):
        safe_extract(archive, dest)
    assert victim.intact() and not (dest / "fine.txt").exists()


def test_an_archive_over_the_size_cap_is_refused_naming_the_cap(tmp_path, cache, capsys, monkeypatch, victim):
    folder = tmp_path / "data" / "celeba"
    folder.mkdir(parents=True)
    zip_file(folder / "img_align_celeba.zip", {"img_align_celeba/000001.jpg": bytes(2**20)})  # 1 MiB in 1 KiB
    monkeypatch.setenv("VICIOUS_MAX_EXTRACT_BYTES", str(2**19))
    assert main(["train", "--preset", "celeba-k1-vicious-small", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run")]) == 2
    one_line(capsys, "declare 1 MiB or more uncompressed, over the cap of 512 KiB", "VICIOUS_MAX_EXTRACT_BYTES")
    assert not (folder / "img_align_celeba").exists() and victim.intact()


def test_archive_caps_on_members_and_on_the_bytes_that_come_out(tmp_path):
    many = zip_file(tmp_path / "many.zip", {f"f{i}": b"" for i in range(11)})
    with pytest.raises(ArchiveTooLargeError, match="more members than the cap of 10.*max_members"):
        safe_extract(many, tmp_path / "out", max_members=10)
    # A header that declares 1000 bytes for a member that inflates to 1 MiB: zipfile stops at
    # the declared size and its CRC check fails; nothing of the member is left.
    lying = bytearray(zip_file(tmp_path / "big.zip", {"zeros": bytes(2**20)}).read_bytes())
    lying[22:26] = (1000).to_bytes(4, "little")
    central = lying.find(b"PK\x01\x02")
    lying[central + 24:central + 28] = (1000).to_bytes(4, "little")
    (tmp_path / "lying.zip").write_bytes(bytes(lying))
    with pytest.raises(ValueError, match="damaged or crafted"):
        safe_extract(tmp_path / "lying.zip", tmp_path / "out2", max_bytes=2**19)
    assert os.listdir(tmp_path / "out2") == []
    # The real datasets fit the default caps by a wide margin.
    safe_extract(tmp_path / "big.zip", tmp_path / "out3")
    assert (tmp_path / "out3" / "zeros").stat().st_size == 2**20


# -- one writer per folder ----------------------------------------------------------------

_HOLD = ("import sys\nfrom vicious.runs.locks import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n")


def hold(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until killed."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_process_on_a_run_folder_is_refused_naming_the_holder(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "run")
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    other = hold(copy)
    try:
        assert main([*RESUME, str(copy)]) == 2
        one_line(capsys, f"{copy} is in use by pid {other.pid} on ", "wait for it to end")
        assert main(["evaluate", str(copy)]) == 2
        one_line(capsys, f"pid {other.pid}")
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert {p: p.read_bytes() for p in before} == before  # the refused commands wrote nothing
    # The killed holder left its record; the lock went with the process, so the folder is free.
    assert (copy / HOLDER_FILE).exists() and holder(copy) is None
    assert main([*RESUME, str(copy)]) == 0
    assert not (copy / HOLDER_FILE).exists() and (copy / LOCK_FILE).exists()


def test_a_demo_folder_in_use_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    other = hold(out)
    try:
        assert main(["demo", "--out", str(out), "--quiet"]) == 2
        one_line(capsys, f"{out} is in use by pid {other.pid}")
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert sorted(os.listdir(out)) == [LOCK_FILE, HOLDER_FILE]  # nothing trained or written


def write_grid(path: Path, seeds: list[int]) -> Path:
    path.write_text(yaml.safe_dump({"preset": PRESET, "set": ONE_EPOCH_SET, "vary": {"seed": seeds}}))
    return path


def test_two_sweeps_on_one_folder_and_a_killed_cell_shows_as_interrupted(tmp_path, capsys):
    first, second = write_grid(tmp_path / "first.yaml", [1]), write_grid(tmp_path / "second.yaml", [2])
    out = tmp_path / "sweep"
    cell = out / f"{PRESET}__seed=1"
    sweep = launch(["sweep", str(first), "--out", str(out)], tmp_path, hang_at="batch:joint:0:0")
    try:
        deadline = time.monotonic() + 120
        while not sweep.marker.exists():  # hung inside the cell's training, holding both locks
            assert sweep.exitcode is None and time.monotonic() < deadline, sweep.log_path.read_text()
            time.sleep(0.05)
        assert main(["sweep", str(second), "--out", str(out)]) == 2
        one_line(capsys, f"{out} is in use by pid {sweep.pid}")
        assert not (out / f"{PRESET}__seed=2").exists()
        assert main(["sweep", str(first), "--out", str(out), "--dry-run"]) == 0
        listing = capsys.readouterr().out
        assert f"{'running':11} {cell.name}" in listing and f"pid {sweep.pid}" in listing
    finally:
        kill_when_hung(sweep)
    assert json.loads((cell / "status.json").read_text())["state"] == "running"  # as the kill left it
    assert cell_state(cell) == "interrupted"
    assert main(["sweep", str(first), "--out", str(out), "--dry-run"]) == 0
    assert f"interrupted {cell.name}" in capsys.readouterr().out
    for folder in (out, cell):  # neither is stuck: the locks died with the process
        with folder_lock(folder):
            pass
