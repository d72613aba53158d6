import pytest

from vicious.data import cache_root, dataset_names, load_dataset


def test_names():
    assert dataset_names() == ("mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet", "celeba")
    assert "celeba-k10" in dataset_names(include_aliases=True)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as error:
        load_dataset("imagenet")
    for name in dataset_names():
        assert name in str(error.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="CelebA only"):
        load_dataset("mnist", attributes="k3")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("mnist", image_size=0)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("mnist", seed=-1)


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("VICIOUS_CACHE")
    assert str(cache_root()).endswith(".cache/vicious")


def test_explicit_cache_dir(tmp_path, fake):
    fake.mnist(tmp_path / "MNIST" / "raw")
    load_dataset("mnist", root=tmp_path, cache_dir=tmp_path / "mine")
    assert list((tmp_path / "mine" / "stats").glob("*.json"))
