"""Tiny datasets written in each dataset's exact on-disk format, for the real loaders.

Like torchvision's own dataset tests, these write a handful of samples in the
official file formats. Where torchvision checks a file's md5 against the official
value, the tests replace the class's table of md5s with the fake files' md5s, so
the real integrity check still runs (and a damaged fake file still fails it).
"""

from __future__ import annotations

import hashlib
import pickle
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vicious.data.idx import write_idx, write_idx_gz

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(monkeypatch) -> SimpleNamespace:
    """The fake-data writers below (test modules cannot import conftest reliably)."""
    return SimpleNamespace(
        mnist=write_mnist,
        mnist_arrays=mnist_arrays,
        cifar=partial(write_cifar, monkeypatch=monkeypatch),
        celeba=partial(write_celeba, monkeypatch=monkeypatch),
        celeba_attributes=CELEBA_ATTRIBUTES,
        tinyimagenet=write_tinyimagenet,
        tiny_wnids=TINY_WNIDS,
        jpeg=write_jpeg,
        md5=md5,
    )


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache directory for every test (also via VICIOUS_CACHE)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("VICIOUS_CACHE", str(path))
    return path


# --- MNIST / Fashion-MNIST: IDX files -------------------------------------------------


def mnist_arrays(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def write_mnist(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> dict:
    """The four official IDX files in `folder` (plain, or .gz like the distribution)."""
    folder.mkdir(parents=True, exist_ok=True)
    write = write_idx_gz if gz else write_idx
    suffix = ".gz" if gz else ""
    arrays = {"train": mnist_arrays(n_train, 0), "t10k": mnist_arrays(n_test, 1)}
    for part, (images, labels) in arrays.items():
        write(folder / f"{part}-images-idx3-ubyte{suffix}", images)
        write(folder / f"{part}-labels-idx1-ubyte{suffix}", labels)
    return arrays


# --- CIFAR: python pickles ---------------------------------------------------------------


def write_cifar(root: Path, name: str, monkeypatch, per_batch: int = 8) -> dict:
    """cifar-10-batches-py/ (5 train batches) or cifar-100-python/ with the fake md5s patched in."""
    from torchvision.datasets import CIFAR10, CIFAR100

    rng = np.random.default_rng(2)
    num_classes = 10 if name == "cifar10" else 100
    dataset_class = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / dataset_class.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(path: Path, count: int, offset: int) -> tuple[np.ndarray, list[int]]:
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        labels = [(offset + i) % num_classes for i in range(count)]
        entry = {"batch_label": path.name, label_key: labels, "data": data}
        if name == "cifar100":
            entry["coarse_labels"] = [label // 5 for label in labels]
        path.write_bytes(pickle.dumps(entry, protocol=2))
        return data, labels

    train_files = [file for file, _ in dataset_class.train_list]
    train = [batch(folder / file, per_batch, i * per_batch) for i, file in enumerate(train_files)]
    test = batch(folder / dataset_class.test_list[0][0], per_batch, 3)
    names = [f"class{i}" for i in range(num_classes)]
    meta = dataset_class.meta
    content = {meta["key"]: names}
    if name == "cifar100":
        content["coarse_label_names"] = [f"super{i}" for i in range(20)]
    (folder / meta["filename"]).write_bytes(pickle.dumps(content, protocol=2))

    monkeypatch.setattr(dataset_class, "train_list", [[f, md5(folder / f)] for f in train_files])
    test_file = dataset_class.test_list[0][0]
    monkeypatch.setattr(dataset_class, "test_list", [[test_file, md5(folder / test_file)]])
    monkeypatch.setattr(dataset_class, "meta", {**meta, "md5": md5(folder / meta["filename"])})
    return {
        "folder": folder,
        "train_data": np.concatenate([data for data, _ in train]),
        "train_labels": [label for _, labels in train for label in labels],
        "test_data": test[0],
        "test_labels": test[1],
        "classes": names,
    }


# --- CelebA: five annotation files and a JPEG folder -------------------------------------


def write_jpeg(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path, "JPEG")


def write_celeba(root: Path, monkeypatch, partition=(0,) * 6 + (1,) * 3 + (2,) * 3, zip_images=False) -> dict:
    """root/celeba/ as distributed: 178×218 JPEGs and the five annotation .txt files.

    Returns the attribute table (−1/1, one row per image) and the partition.
    """
    import zipfile

    from torchvision.datasets import CelebA

    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    count = len(partition)
    names = [f"{i + 1:06d}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        write_jpeg(images / name, (178, 218), seed=i)
    rng = np.random.default_rng(3)
    attr = np.where(rng.random((count, 40)) < 0.5, 1, -1)
    attr[0] = 1  # every attribute has a positive training example
    attr[1] = -1

    def lines(rows, header=None, count_line=True):
        text = f"{count}\n" if count_line else ""
        if header is not None:
            text += header + "\n"
        return text + "".join(f"{name} {row}\n" for name, row in zip(names, rows, strict=True))

    # Real list_attr_celeba.txt: header line ends with a space; values right-aligned in width 2.
    (folder / "list_attr_celeba.txt").write_text(
        lines(
            [" ".join(f"{v:2d}" for v in row) for row in attr],
            header=" ".join(CELEBA_ATTRIBUTES) + " ",
        )
    )
    (folder / "identity_CelebA.txt").write_text(
        lines([str(100 + i % 4) for i in range(count)], count_line=False)
    )
    (folder / "list_bbox_celeba.txt").write_text(
        lines(["95  71 226 313"] * count, header="image_id x_1 y_1 width height")
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        lines(
            ["69  109  106  113   77  142   73  152  108  154"] * count,
            header="lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
            "leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
        )
    )
    (folder / "list_eval_partition.txt").write_text(
        lines([str(p) for p in partition], count_line=False)
    )
    if zip_images:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
            for name in names:
                archive.write(images / name, f"img_align_celeba/{name}")
        for name in names:
            (images / name).unlink()
        images.rmdir()
    file_list = [
        (file_id, md5(folder / file) if (folder / file).exists() else digest, file)
        for file_id, digest, file in CelebA.file_list
    ]
    monkeypatch.setattr(CelebA, "file_list", file_list)
    return {"folder": folder, "attr": attr, "partition": np.array(partition), "names": names}


# --- TinyImageNet: folders of JPEGs and val_annotations.txt ------------------------------

TINY_WNIDS = ("n02124075", "n01443537", "n04067472")


def write_tinyimagenet(parent: Path, per_class: int = 10, per_class_val: int = 2) -> dict:
    """parent/tiny-imagenet-200/ in the official layout, with one grayscale JPEG per split."""
    folder = parent / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))
    seed = 0
    for wnid in TINY_WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(per_class):
            mode = "L" if (wnid, i) == (TINY_WNIDS[1], 3) else "RGB"
            write_jpeg(images / f"{wnid}_{i}.JPEG", (64, 64), seed, mode)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
            seed += 1
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    annotations, val_labels = [], []
    for i in range(per_class_val * len(TINY_WNIDS)):
        wnid = TINY_WNIDS[i % len(TINY_WNIDS)]
        write_jpeg(folder / "val" / "images" / f"val_{i}.JPEG", (64, 64), 1000 + i, "L" if i == 0 else "RGB")
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
        val_labels.append(sorted(TINY_WNIDS).index(wnid))
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    return {"folder": folder, "val_labels": val_labels}
