"""Build the embedded Fashion-MNIST subset shipped in src/vicious/data/embedded/.

A seeded random subset of the official Fashion-MNIST (read from the Debian package
dataset-fashion-mnist): 2,000 test images and as many training images as fit in
5 MB together — 10,000 when they fit, else the largest multiple of 1,000. Written
as gzip IDX files with the same names as the official ones, an MD5SUMS listing
the loader checks, and the dataset's MIT licence notice.

    PYTHONPATH=src python scripts/make_embedded_dataset.py [--source DIR] [--seed 1]

The output is byte-for-byte reproducible (fixed seed, gzip mtime 0).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from vicious.data.idx import read_idx, write_idx_gz

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src" / "vicious" / "data" / "embedded"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
LICENSE = Path("/usr/share/doc/dataset-fashion-mnist/copyright")
BUDGET = 5_000_000  # bytes for the whole folder (5 MB)
TEST_COUNT = 2_000
TRAIN_COUNTS = range(10_000, 0, -1_000)


def subset(images: np.ndarray, labels: np.ndarray, count: int, seed: int):
    """`count` samples drawn without replacement by a seeded permutation, in source order."""
    index = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
    return images[index], labels[index]


def write_part(prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx_gz(OUT / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx_gz(OUT / f"{prefix}-labels-idx1-ubyte.gz", labels)


def folder_size() -> int:
    return sum(path.stat().st_size for path in OUT.iterdir() if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN, help="folder with the four .gz files")
    parser.add_argument("--license", type=Path, default=LICENSE, help="the licence notice to copy")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    read = lambda name: read_idx(args.source / f"{name}.gz")  # noqa: E731
    train_images, train_labels = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
    test_images, test_labels = read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte")

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.gz"):
        old.unlink()
    notice = args.license.read_text()
    (OUT / "LICENSE-fashion-mnist.txt").write_text(
        "The files in this folder are a random subset of Fashion-MNIST\n"
        "(https://github.com/zalandoresearch/fashion-mnist), made by\n"
        "scripts/make_embedded_dataset.py from the Debian package dataset-fashion-mnist,\n"
        "whose copyright file follows.\n\n" + notice
    )
    write_part("t10k", *subset(test_images, test_labels, TEST_COUNT, args.seed))

    for count in TRAIN_COUNTS:
        write_part("train", *subset(train_images, train_labels, count, args.seed))
        # Leave room for MD5SUMS (four lines, < 300 bytes).
        if folder_size() + 300 <= BUDGET:
            break
    else:
        raise SystemExit("not even 1,000 training images fit in the budget")

    sums = []
    for path in sorted(OUT.glob("*.gz")):
        sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}\n")
    (OUT / "MD5SUMS").write_text("".join(sums))
    print(f"embedded Fashion-MNIST: {count} train, {TEST_COUNT} test, {folder_size():,} bytes in {OUT}")


if __name__ == "__main__":
    main()
