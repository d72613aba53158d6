import pytest
import torch

from vicious.data import DatasetCorruptError, DatasetNotFoundError, load_dataset


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickles(tmp_path, fake, name, classes):
    written = fake.cifar(tmp_path, name)  # 5 train batches of 8 (CIFAR-10) or 1 of 8 (CIFAR-100)
    n_train = len(written["train_labels"])
    splits = load_dataset(name, root=tmp_path, seed=1)
    n_val = round(n_train * 0.1) or 1
    assert (len(splits.train), len(splits.val), len(splits.test)) == (n_train - n_val, n_val, 8)
    assert splits.info.num_outputs == classes and splits.info.channels == 3
    assert list(splits.info.output_names) == written["classes"]
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.train.images.dtype == torch.uint8
    # CHW layout of the official rows: 1024 red, 1024 green, 1024 blue values.
    expected = torch.from_numpy(written["test_data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(splits.test.images, expected)
    assert splits.test.labels.tolist() == written["test_labels"]
    assert len(splits.mean) == 3 and all(0 < s < 1 for s in splits.std)


def test_cifar_resized_to_64(tmp_path, fake):
    fake.cifar(tmp_path, "cifar10")
    splits = load_dataset("cifar10", root=tmp_path, image_size=64)
    assert splits.train.images.shape[1:] == (3, 64, 64)


def test_cifar_bad_md5_names_file(tmp_path, fake):
    written = fake.cifar(tmp_path, "cifar10")
    path = written["folder"] / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetCorruptError, match="data_batch_3.*--download"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_names_files_and_url(tmp_path, cache):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("cifar100")
    message = str(error.value)
    assert str(cache / "cifar100" / "cifar-100-python") in message
    assert "train" in message and "meta" in message
    assert "--download" in message and "cifar-100-python.tar.gz" in message
