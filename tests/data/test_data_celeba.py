import numpy as np
import pytest
import torch

from vicious.data import DatasetCorruptError, DatasetNotFoundError, celeba_attribute_set, load_dataset

# The method's sets (docs/method.md), restated here independently of the library.
METHOD_SETS = {
    1: [31],
    2: [8, 31],
    3: [8, 20, 31],
    4: [2, 8, 20, 31],
    5: [2, 8, 19, 20, 31],
    6: [2, 8, 18, 19, 20, 31],
    7: [2, 8, 18, 20, 31, 36, 39],
    8: [2, 8, 18, 20, 31, 33, 36, 39],
    9: [2, 8, 18, 19, 20, 31, 33, 36, 39],
    10: [2, 8, 11, 18, 19, 20, 31, 33, 36, 39],
    15: [1, 2, 6, 7, 8, 18, 19, 20, 21, 25, 27, 31, 33, 36, 39],
    20: [1, 2, 3, 6, 7, 8, 11, 18, 19, 20, 21, 24, 25, 27, 31, 32, 33, 34, 36, 39],
    30: [0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 15, 18, 19, 20, 21, 23, 24, 25, 27, 28,
         31, 32, 33, 34, 36, 37, 38, 39],
    40: list(range(40)),
}


def test_attribute_sets():
    # As the method writes them (not strictly nested: K=7 drops 19, K=15 drops 11).
    for k, indices in METHOD_SETS.items():
        assert celeba_attribute_set(k) == indices
        assert len(indices) == k
    with pytest.raises(ValueError, match="valid sizes"):
        celeba_attribute_set(11)


def expected_labels(written, split_code, indices):
    rows = written["attr"][written["partition"] == split_code]
    return torch.from_numpy((rows[:, indices] > 0).astype(np.float32))


@pytest.mark.parametrize(
    "attributes, indices",
    [
        ("k3", [8, 20, 31]),
        ([31, 2, 8], [31, 2, 8]),
        (["Smiling", "Male"], [31, 20]),
        (None, list(range(40))),
    ],
)
def test_celeba_attributes_labels_and_pos_weight(tmp_path, fake, attributes, indices):
    written = fake.celeba(tmp_path)
    splits = load_dataset("celeba", root=tmp_path, attributes=attributes)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 3)
    assert splits.info.task == "multilabel" and splits.info.num_outputs == len(indices)
    assert list(splits.info.output_names) == [fake.celeba_attributes[i] for i in indices]
    for split, code in ((splits.train, 0), (splits.val, 1), (splits.test, 2)):
        assert split.labels.dtype == torch.float32
        assert torch.equal(split.labels, expected_labels(written, code, indices))
    # pos_weight_j = (N - P_j) / P_j over the training labels, computed from the raw table.
    train_rows = written["attr"][written["partition"] == 0][:, indices]
    positives = (train_rows > 0).sum(axis=0)
    expected = (len(train_rows) - positives) / positives
    assert splits.pos_weight.dtype == torch.float32
    assert np.allclose(splits.pos_weight.numpy(), expected)
    assert splits.train.images.shape == (6, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert len(splits.mean) == 3


def test_alias_name_and_image_size_64(tmp_path, fake):
    fake.celeba(tmp_path)
    splits = load_dataset("celeba-k10", root=tmp_path, image_size=64)
    assert splits.info.name == "celeba" and splits.info.num_outputs == 10
    assert splits.test.images.shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="already selects"):
        load_dataset("celeba-k10", root=tmp_path, attributes="k3")


def test_bad_attribute_choices(tmp_path, fake):
    fake.celeba(tmp_path)
    with pytest.raises(ValueError, match="unknown CelebA attribute 'Smiles'"):
        load_dataset("celeba", root=tmp_path, attributes=["Smiles"])
    with pytest.raises(ValueError, match="outside"):
        load_dataset("celeba", root=tmp_path, attributes=[40])
    with pytest.raises(ValueError, match="valid sizes"):
        load_dataset("celeba", root=tmp_path, attributes="k11")


def test_attribute_without_positives_is_an_error(tmp_path, fake, monkeypatch):
    written = fake.celeba(tmp_path)
    absent = int(np.flatnonzero((written["attr"][written["partition"] == 0] > 0).sum(0) < 6)[0])
    # Rewrite the table so that one attribute is never positive in the training split.
    path = written["folder"] / "list_attr_celeba.txt"
    lines = path.read_text().splitlines(keepends=True)
    for row in range(6):
        values = lines[2 + row].split()
        values[1 + absent] = "-1"
        lines[2 + row] = " ".join(values) + "\n"
    path.write_text("".join(lines))
    from torchvision.datasets import CelebA

    fixed = [(i, fake.md5(path) if f == path.name else m, f) for i, m, f in CelebA.file_list]
    monkeypatch.setattr(CelebA, "file_list", fixed)
    with pytest.raises(ValueError, match=f"{fake.celeba_attributes[absent]}.*no positive"):
        load_dataset("celeba", root=tmp_path, attributes=[absent])


def test_decoded_images_are_cached(tmp_path, fake, cache, monkeypatch):
    fake.celeba(tmp_path)
    first = load_dataset("celeba", root=tmp_path, attributes="k1")
    assert len(list((cache / "decoded").glob("celeba-*-s32-*.npy"))) == 3

    def fail(*args, **kwargs):
        raise AssertionError("images decoded again instead of read from the cache")

    monkeypatch.setattr("vicious.data.celeba.decode_all", fail)
    again = load_dataset("celeba", root=tmp_path, attributes="k2")
    assert torch.equal(first.train.images, again.train.images)
    assert again.mean == first.mean  # statistics do not depend on the attributes


def test_zip_of_images_is_extracted(tmp_path, fake):
    fake.celeba(tmp_path, zip_images=True)
    assert not (tmp_path / "celeba" / "img_align_celeba").exists()
    splits = load_dataset("celeba", root=tmp_path)
    assert len(splits.train) == 6
    assert (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").is_file()


def test_missing_celeba_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("celeba", root=tmp_path)
    message = str(error.value)
    for needed in ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"):
        assert needed in message
    assert "--download" in message and "drive.google.com" in message and "Kaggle" in message


def test_bad_annotation_md5(tmp_path, fake):
    written = fake.celeba(tmp_path)
    with open(written["folder"] / "identity_CelebA.txt", "a") as handle:
        handle.write("\n")
    with pytest.raises(DatasetCorruptError, match="identity_CelebA.txt"):
        load_dataset("celeba", root=tmp_path)


def test_undecodable_image_is_named(tmp_path, fake):
    written = fake.celeba(tmp_path)
    (written["folder"] / "img_align_celeba" / "000004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetCorruptError, match="000004.jpg: cannot be decoded"):
        load_dataset("celeba", root=tmp_path)
