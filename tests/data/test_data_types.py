import pytest
import torch

from vicious.data import DatasetInfo, Split


def make_split(n=10, channels=1, multilabel=False):
    images = torch.arange(n * channels * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.reshape(n, channels, 4, 4)
    labels = torch.rand(n, 3).round() if multilabel else torch.arange(n) % 3
    return Split(images, labels)


def test_float_images_range_and_dtype():
    split = make_split()
    floats = split.float_images()
    assert floats.dtype == torch.float32 and floats.shape == split.images.shape
    assert 0.0 <= floats.min() and floats.max() <= 1.0
    assert torch.equal((floats * 255).round().to(torch.uint8), split.images)


def test_subset_is_seeded_and_ordered():
    split = make_split(20)
    a, b = split.subset(5, seed=3), split.subset(5, seed=3)
    assert len(a) == 5 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, split.subset(5, seed=4).images)
    firsts = a.images[:, 0, 0, 0].tolist()
    assert firsts == sorted(firsts)  # original order kept
    assert split.subset(20, seed=0) is split and split.subset(99, seed=0) is split


def test_multilabel_split_keeps_rows_together():
    split = make_split(12, channels=3, multilabel=True)
    sub = split.subset(4, seed=0)
    assert sub.labels.shape == (4, 3) and sub.labels.dtype == torch.float32


def test_split_validation():
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="output names"):
        DatasetInfo("x", 2, 1, "multiclass", ("a",))
    with pytest.raises(ValueError, match="task"):
        DatasetInfo("x", 1, 1, "regression", ("a",))
