"""Saved files: written atomically, readable like any other file, and an output folder
that cannot hold the results is reported before any data is loaded or trained."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from vicious.cli import main
from vicious.runs import files
from vicious.runs.files import atomic_write_bytes, atomic_write_json, check_writable

TRAIN = ["train", "--preset", "fashion-mnist-vicious-small", "--set", "train.progress=false"]


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_write_bytes(target, b"epoch 0, complete")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"epoch 1, cut short" * 1000)
    assert target.read_bytes() == b"epoch 0, complete"
    assert os.listdir(tmp_path) == ["last.ckpt"]  # the temporary file is gone too


def test_written_files_get_the_usual_permissions(tmp_path):
    # mkstemp's private 0600 would keep colleagues from reading shared results:
    # an atomically written file gets the mode open() gives a new file.
    atomic_write_json(tmp_path / "metrics.json", {"accuracy": 0.5})
    (tmp_path / "plain.json").write_text("{}")
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_an_output_path_under_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    # (Tests run as root, for whom chmod does not make a folder unwritable; a path
    # under a regular file cannot be created by anyone.)
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    assert main([*TRAIN, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vicious: error: cannot write to output folder") and str(blocker / "run") in err
    assert "choose another --out" in err and err.count("\n") == 1


def test_an_unwritable_proc_folder_is_refused(tmp_path, capsys, no_training):
    assert main([*TRAIN, "--out", "/proc/vicious-forbidden"]) == 2
    assert "cannot write to output folder /proc/vicious-forbidden" in capsys.readouterr().err


def test_low_free_space_is_refused_before_training(tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 3 * 2**20)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "only 3 MiB free" in err and "at least 50 MiB" in err and "free some space" in err


def test_free_space_probe_measures_this_filesystem(tmp_path):
    # The probe agrees with an independent measurement (shutil.disk_usage) to within
    # what other processes may write meanwhile.
    import shutil

    free = files._free_bytes(tmp_path)
    assert free is not None and abs(free - shutil.disk_usage(tmp_path).free) < 2**30
    check_writable(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir() and not list((tmp_path / "new" / "folder").iterdir())


def test_a_run_whose_data_was_missing_can_simply_be_rerun(tmp_path, capsys):
    # The first attempt fails on the data after creating the folder; nothing was
    # trained, so the corrected command must not demand --resume.
    out = str(tmp_path / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    tiny = ["--set", "data.train_limit=50", "--set", "data.val_limit=50", "--set", "data.test_limit=50",
            "--set", "train.epochs=1", "--set", "data.augment=false", "--set", "train.accelerator=cpu"]
    assert main([*TRAIN, *tiny, "--data-root", str(empty), "--out", out, "--no-evaluate"]) == 2
    assert "looked for" in capsys.readouterr().err
    assert main([*TRAIN, *tiny, "--out", out, "--no-evaluate"]) == 0
    # Once something was trained, the folder is protected again.
    assert main([*TRAIN, *tiny, "--out", out, "--no-evaluate"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
