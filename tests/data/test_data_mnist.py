from pathlib import Path

import numpy as np
import pytest
import torch

import vicious.data.mnist as mnist_module
from vicious.data import DatasetCorruptError, DatasetNotFoundError, load_dataset

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed."""
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


def expected_images(images: np.ndarray, size: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(torch.from_numpy(images).unsqueeze(1), [size, size], antialias=True)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_layout(tmp_path, fake, name, folder):
    arrays = fake.mnist(tmp_path / folder / "raw", n_train=60, n_test=20)
    splits = load_dataset(name, root=tmp_path, seed=1)
    assert splits.source == f"root:{tmp_path}"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    assert splits.info.num_outputs == 10 and splits.info.channels == 1
    assert splits.info.task == "multiclass" and len(splits.info.output_names) == 10
    assert splits.train.images.shape == (50, 1, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.train.labels.dtype == torch.int64 and splits.pos_weight is None
    # The test split is the official one, in file order, resized 28 -> 32.
    test_images, test_labels = arrays["t10k"]
    assert splits.test.labels.tolist() == test_labels.tolist()
    assert torch.equal(splits.test.images, expected_images(test_images, 32))
    # train + val are exactly the official training set.
    train_images, train_labels = arrays["train"]
    together = torch.cat([splits.train.images, splits.val.images])
    original = expected_images(train_images, 32)
    assert sorted(map(bytes, together.flatten(1).numpy())) == sorted(map(bytes, original.flatten(1).numpy()))
    assert len(splits.mean) == len(splits.std) == 1
    assert 0 < splits.mean[0] < 1 and 0 < splits.std[0] < 1


def test_native_size_and_same_seed_same_split(tmp_path, fake):
    fake.mnist(tmp_path / "MNIST" / "raw")
    a = load_dataset("mnist", root=tmp_path, image_size=28, seed=3)
    b = load_dataset("mnist", root=str(tmp_path), image_size=28, seed=3)
    c = load_dataset("mnist", root=tmp_path, image_size=28, seed=4)
    assert a.train.images.shape[-2:] == (28, 28)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)


@pytest.mark.parametrize("where", ["flat", "raw"])
def test_gzip_files_are_staged_into_cache(tmp_path, fake, cache, where):
    data = tmp_path / "data"
    folder = data if where == "flat" else data / "FashionMNIST" / "raw"
    fake.mnist(folder, gz=True)
    splits = load_dataset("fashion-mnist", root=data)
    assert splits.source == f"root:{data}" and len(splits.test) == 20
    staged = list((cache / "staged").glob("fashion-mnist-*/FashionMNIST/raw/train-images-idx3-ubyte"))
    assert len(staged) == 1
    assert not any(data.rglob("*-ubyte"))  # nothing written into the user's folder


def test_truncated_idx_is_named(tmp_path, fake):
    raw = tmp_path / "MNIST" / "raw"
    fake.mnist(raw)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetCorruptError, match="train-images-idx3-ubyte.*truncated.*--download"):
        load_dataset("mnist", root=tmp_path)


def test_truncated_gzip_is_named(tmp_path, fake):
    fake.mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DatasetCorruptError, match="t10k-images-idx3-ubyte.gz is corrupt"):
        load_dataset("mnist", root=tmp_path)


def test_missing_root_is_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("mnist", root=tmp_path / "nope")
    message = str(error.value)
    assert "\n" not in message and "does not exist" in message and "--data-root" in message


def test_empty_root_says_what_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("mnist", root=tmp_path)
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "--download" in message and "http" in message


def test_mnist_cache_without_download(cache):
    with pytest.raises(DatasetNotFoundError, match=str(cache / "mnist")):
        load_dataset("mnist")


def test_download_goes_through_torchvision(tmp_path, fake, monkeypatch):
    """--download calls torchvision's own download (mocked here, as torchvision's tests do)."""
    calls = []

    def fake_download(url, download_root, filename, md5):
        calls.append(url)
        target = Path(download_root) / filename.removesuffix(".gz")
        part = "train" if filename.startswith("train") else "t10k"
        images, labels = fake.mnist_arrays(60 if part == "train" else 20, 0)
        from vicious.data.idx import write_idx

        write_idx(target, labels if "labels" in filename else images)

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake_download)
    splits = load_dataset("mnist", root=tmp_path / "new", download=True)
    assert len(calls) == 4 and all(url.startswith("http") for url in calls)
    assert (len(splits.train), len(splits.test)) == (50, 20)


def test_embedded_default(no_debian, cache):
    splits = load_dataset("fashion-mnist")
    assert splits.source == "embedded"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7500, 1500, 2000)
    assert splits.train.images.shape[1:] == (1, 32, 32)
    assert set(splits.test.labels.tolist()) == set(range(10))
    assert (cache / "embedded" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_embedded_files_fit_in_5_mb():
    folder = mnist_module.EMBEDDED_DIR
    files = sorted(path.name for path in folder.iterdir())
    assert "LICENSE-fashion-mnist.txt" in files and "MD5SUMS" in files
    assert sum(path.stat().st_size for path in folder.iterdir()) <= 5_000_000
    assert "Permission is hereby granted" in (folder / "LICENSE-fashion-mnist.txt").read_text()


def test_embedded_checksum_is_verified(no_debian, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "embedded"
    shutil.copytree(mnist_module.EMBEDDED_DIR, copy)
    path = copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes() + b"x")
    monkeypatch.setattr(mnist_module, "EMBEDDED_DIR", copy)
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte.gz: md5"):
        load_dataset("fashion-mnist")


def test_stats_are_cached_as_json(tmp_path, fake, cache, monkeypatch):
    fake.mnist(tmp_path / "MNIST" / "raw")
    first = load_dataset("mnist", root=tmp_path, seed=2)
    files = list((cache / "stats").glob("mnist-s32-seed2-*.json"))
    assert len(files) == 1
    floats = first.train.images.double() / 255  # independent float64 computation
    assert first.mean[0] == pytest.approx(floats.mean().item(), abs=1e-9)
    assert first.std[0] == pytest.approx(floats.std(unbiased=False).item(), abs=1e-9)

    def fail(images):
        raise AssertionError("statistics recomputed instead of read from the cache")

    monkeypatch.setattr("vicious.data.stats.channel_stats", fail)
    assert load_dataset("mnist", root=tmp_path, seed=2).mean == first.mean
    with pytest.raises(AssertionError):  # another seed is another training split
        load_dataset("mnist", root=tmp_path, seed=3)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_full_fashion_mnist_from_debian(cache):
    splits = load_dataset("fashion-mnist", seed=1)
    assert splits.source == f"debian:{DEBIAN}"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert splits.train.images.shape == (50_000, 1, 32, 32)
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert splits.mean[0] == pytest.approx(0.286, abs=0.005)
    assert splits.std[0] == pytest.approx(0.34, abs=0.01)
    again = load_dataset("fashion-mnist", seed=1)  # staged files reused
    assert torch.equal(again.val.labels, splits.val.labels)


def test_given_root_is_the_only_place_looked(tmp_path):
    """With --data-root, neither the Debian files nor the embedded subset are used."""
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("fashion-mnist", root=tmp_path)


def _load_after(barrier, results):
    import torch

    torch.set_num_threads(1)  # a forked child must not start the parent's OpenMP threads
    barrier.wait()
    try:
        splits = load_dataset("fashion-mnist")
        results.put(len(splits.train))
    except Exception as error:  # noqa: BLE001 - reported to the test
        results.put(repr(error))


def test_processes_staging_the_embedded_files_at_once_all_read_whole_files(no_debian, cache):
    """The demo's workers (and a sweep's) stage a fresh cache at the same moment: each writes its
    own temporary file, so none renames a half-written one into place."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_load_after, args=(barrier, results), daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        found = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:  # never leave a stuck child for the interpreter to wait on at exit
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    assert found == [7500] * 3
    assert len(load_dataset("fashion-mnist").train) == 7500  # and the cache left behind is whole
