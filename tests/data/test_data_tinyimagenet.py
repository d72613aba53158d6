import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import vicious.data.tinyimagenet as tiny
from vicious.data import DatasetCorruptError, DatasetNotFoundError, load_dataset


def test_tinyimagenet_layout(tmp_path, fake):
    written = fake.tinyimagenet(tmp_path)  # 3 classes × 10 train, 6 val (one grayscale each)
    splits = load_dataset("tinyimagenet", root=tmp_path, seed=1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 6)
    assert splits.info.num_outputs == 3 and splits.info.output_names == tuple(sorted(fake.tiny_wnids))
    assert splits.train.images.shape == (27, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.test.labels.tolist() == written["val_labels"]
    assert sorted(torch.cat([splits.train.labels, splits.val.labels]).tolist()) == sorted(
        [0] * 10 + [1] * 10 + [2] * 10
    )
    # The grayscale val JPEG (val_0) became RGB with three equal channels.
    gray = splits.test.images[0].to(torch.int16)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert not torch.equal(splits.test.images[1][0], splits.test.images[1][1])


def test_native_64_and_folder_as_root(tmp_path, fake):
    written = fake.tinyimagenet(tmp_path)
    splits = load_dataset("tinyimagenet", root=written["folder"], image_size=64)
    assert splits.test.images.shape == (6, 3, 64, 64)


def test_missing_tinyimagenet_message(tmp_path, cache):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("tinyimagenet")
    message = str(error.value)
    assert "wnids.txt" in message and "val_annotations.txt" in message
    assert str(cache / "tinyimagenet") in message
    assert "--download" in message and tiny.URL in message


def make_zip(tmp_path, fake) -> Path:
    source = tmp_path / "source"
    fake.tinyimagenet(source)
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(source.rglob("*")):
            z.write(path, path.relative_to(source).as_posix())
    return archive


def test_download_checks_md5_and_extracts(tmp_path, fake, cache, monkeypatch):
    archive = make_zip(tmp_path, fake)
    monkeypatch.setattr(tiny, "ARCHIVE_MD5", fake.md5(archive))
    fetched = []

    def fake_download_url(url, root, filename, md5):
        fetched.append((url, md5))
        shutil.copy(archive, Path(root) / filename)

    monkeypatch.setattr(tiny, "download_url", fake_download_url)
    splits = load_dataset("tinyimagenet", download=True)
    assert fetched == [(tiny.URL, fake.md5(archive))]
    assert splits.source == f"cache:{cache / 'tinyimagenet'}" and len(splits.test) == 6
    assert (cache / "tinyimagenet" / "tiny-imagenet-200" / "wnids.txt").is_file()


def test_bad_archive_md5(tmp_path, fake, monkeypatch):
    archive = make_zip(tmp_path, fake)
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(archive, root / archive.name)
    with pytest.raises(DatasetCorruptError, match="tiny-imagenet-200.zip fails its md5"):
        load_dataset("tinyimagenet", root=root)


def test_decoded_arrays_are_npy(tmp_path, fake, cache):
    fake.tinyimagenet(tmp_path)
    load_dataset("tinyimagenet", root=tmp_path)
    files = sorted((cache / "decoded").glob("tinyimagenet-*.npy"))
    assert len(files) == 2
    array = np.load(files[0], allow_pickle=False)
    assert array.dtype == np.uint8 and array.shape[1:] == (3, 32, 32)


def test_unknown_wnid_in_annotations(tmp_path, fake):
    written = fake.tinyimagenet(tmp_path)
    with open(written["folder"] / "val" / "val_annotations.txt", "a") as handle:
        handle.write("val_99.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DatasetCorruptError, match="line 7"):
        load_dataset("tinyimagenet", root=tmp_path)
