"""load_user_images on tiny folders and .npz files written here, checked against PIL / numpy."""

from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vicious.data import UserImages, load_user_images

RNG = np.random.default_rng(0)


def pixels(shape, rng=RNG):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def refused(match, call, error=ValueError):
    """The call raises `error` matching `match`, with a one-line message."""
    with pytest.raises(error, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def png_header_only(path, width, height):
    """A PNG whose header claims width×height, with no real pixel data behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"x") + chunk(b"IEND", b""))


# --- folders: values, labels, conversion ---------------------------------------------------------


def test_same_size_png_is_exact(tmp_path):
    rgb = [save(tmp_path / f"{i}.png", pixels((6, 6, 3))) for i in range(3)]
    out = load_user_images(tmp_path, channels=3, image_size=6)
    assert isinstance(out, UserImages) and out.labels is None and out.class_names is None
    assert out.images.dtype == torch.float32 and out.images.shape == (3, 3, 6, 6)
    expected = torch.tensor(np.stack(rgb).transpose(0, 3, 1, 2), dtype=torch.float32) / 255
    assert torch.equal(out.images, expected)
    assert out.source == f"folder {tmp_path}/ (unlabelled, 3 images)"


def test_grey_png_as_one_and_three_channels(tmp_path):
    grey = [save(tmp_path / f"{i}.png", pixels((5, 5))) for i in range(2)]
    one = load_user_images(tmp_path, channels=1, image_size=5).images
    three = load_user_images(tmp_path, channels=3, image_size=5).images
    assert torch.equal(one[:, 0], torch.tensor(np.stack(grey), dtype=torch.float32) / 255)
    assert torch.equal(three, one.expand(-1, 3, -1, -1))


def test_rgb_to_grey_and_resize_match_pil(tmp_path):
    for i in range(2):
        save(tmp_path / f"{i}.png", pixels((40, 40, 3)))
    out = load_user_images(tmp_path, channels=1, image_size=32).images
    for i in range(2):
        with Image.open(tmp_path / f"{i}.png") as image:
            ref = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
        assert torch.equal(out[i, 0], torch.tensor(ref, dtype=torch.float32) / 255)


def test_jpeg_and_upper_case_extension(tmp_path):
    save(tmp_path / "a.JPG", pixels((8, 8, 3)))
    save(tmp_path / "b.jpeg", pixels((8, 8, 3)))
    out = load_user_images(tmp_path, channels=3, image_size=8).images
    for i, name in enumerate(["a.JPG", "b.jpeg"]):
        with Image.open(tmp_path / name) as image:
            ref = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        assert torch.equal(out[i], torch.tensor(ref, dtype=torch.float32) / 255)


def test_digit_folders_give_their_numbers(tmp_path):
    for label in (0, 3, 7):
        for j in range(2):  # each image's value tells its folder
            save(tmp_path / str(label) / f"{j}.png", np.full((4, 4), 10 * label + j, np.uint8))
    (tmp_path / "3" / "README.txt").write_text("skipped")
    (tmp_path / "3" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / ".hidden").mkdir()
    out = load_user_images(tmp_path, channels=1, image_size=4, num_classes=8)
    assert out.class_names is None and out.labels.dtype == torch.int64
    values = torch.round(out.images[:, 0, 0, 0] * 255).long()
    assert out.labels.tolist() == [0, 0, 3, 3, 7, 7]
    assert torch.equal(values // 10, out.labels)
    assert out.source.endswith("(3 classes, 6 images)")


def test_named_folders_follow_sorted_order(tmp_path):
    for value, name in [(1, "cat"), (2, "ant"), (3, "bee"), (4, "Zebra")]:
        for j in range(2):
            save(tmp_path / name / f"{j}.png", np.full((4, 4, 3), value, np.uint8))
    out = load_user_images(tmp_path, channels=3, image_size=4, num_classes=4)
    assert out.class_names == ["Zebra", "ant", "bee", "cat"]  # like ImageFolder: sorted() of names
    values = torch.round(out.images[:, 0, 0, 0] * 255).long().tolist()
    names = [out.class_names[label] for label in out.labels.tolist()]
    assert [dict(cat=1, ant=2, bee=3, Zebra=4)[name] for name in names] == values


def test_symlink_inside_folder_is_followed(tmp_path):
    image = save(tmp_path / "a.png", pixels((4, 4)))
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    out = load_user_images(tmp_path, channels=1, image_size=4).images
    assert torch.equal(out[1, 0], torch.tensor(image, dtype=torch.float32) / 255)


# --- subsets -----------------------------------------------------------------------------------


def test_max_images_subset_is_seeded_and_a_subset(tmp_path):
    for i in range(12):
        save(tmp_path / f"{i:02d}.png", np.full((3, 3), i, np.uint8))
    full = load_user_images(tmp_path, channels=1, image_size=3).images
    some = load_user_images(tmp_path, channels=1, image_size=3, max_images=5, seed=4)
    again = load_user_images(tmp_path, channels=1, image_size=3, max_images=5, seed=4).images
    other = load_user_images(tmp_path, channels=1, image_size=3, max_images=5, seed=5).images
    assert some.images.shape == (5, 1, 3, 3) and torch.equal(some.images, again)
    picked = [int(round(v * 255)) for v in some.images[:, 0, 0, 0].tolist()]
    assert picked == sorted(set(picked)) and torch.equal(full[picked], some.images)
    assert not torch.equal(other, some.images)
    assert some.source.endswith("(unlabelled, 5 of 12 images)")


def test_subset_is_chosen_before_decoding(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", pixels((3, 3)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    outcomes = set()
    for seed in range(20):
        try:
            load_user_images(tmp_path, channels=1, image_size=3, max_images=2, seed=seed)
            outcomes.add("ok")  # the bad file was left out, so never opened
        except ValueError:
            outcomes.add("bad")
    assert outcomes == {"ok", "bad"}


# --- npz -----------------------------------------------------------------------------------------


def test_npz_layouts_agree(tmp_path):
    nhwc = pixels((4, 6, 6, 3))
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.array([1, 0, 2, 1]))
    np.savez_compressed(tmp_path / "b.npz", images=(nhwc.transpose(0, 3, 1, 2) / 255).astype(np.float32))
    a = load_user_images(tmp_path / "a.npz", channels=3, image_size=6, num_classes=3)
    b = load_user_images(tmp_path / "b.npz", channels=3, image_size=6)
    assert torch.allclose(a.images, b.images, atol=1e-7)
    assert torch.equal(a.images, torch.tensor(nhwc.transpose(0, 3, 1, 2), dtype=torch.float32) / 255)
    assert a.labels.dtype == torch.int64 and a.labels.tolist() == [1, 0, 2, 1] and b.labels is None
    assert a.class_names is None and a.source.endswith("(labelled, 4 images)")


def test_npz_grey_nhw_to_three_channels(tmp_path):
    grey = pixels((3, 5, 5))
    np.savez(tmp_path / "g.npz", images=grey)
    out = load_user_images(tmp_path / "g.npz", channels=3, image_size=5).images
    assert out.shape == (3, 3, 5, 5)
    for c in range(3):
        assert torch.equal(out[:, c], torch.tensor(grey, dtype=torch.float32) / 255)


def test_npz_luma(tmp_path):
    rgb = RNG.random((3, 5, 5, 3))
    np.savez(tmp_path / "c.npz", images=rgb)
    out = load_user_images(tmp_path / "c.npz", channels=1, image_size=5).images
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert out.shape == (3, 1, 5, 5)
    assert np.allclose(out[:, 0].numpy(), luma, atol=1e-6)


def test_npz_resize_matches_pil_float_resize(tmp_path):
    grey = RNG.random((2, 40, 40)).astype(np.float32)
    np.savez(tmp_path / "r.npz", images=grey)
    out = load_user_images(tmp_path / "r.npz", channels=1, image_size=32).images
    for i in range(2):
        ref = np.asarray(Image.fromarray(grey[i], mode="F").resize((32, 32), Image.Resampling.BILINEAR))
        assert np.allclose(out[i, 0].numpy(), ref, atol=1e-5)


def test_npz_subset_keeps_labels_with_images(tmp_path):
    images = np.arange(30, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    np.savez(tmp_path / "s.npz", images=images, labels=np.arange(30) % 7)
    out = load_user_images(tmp_path / "s.npz", channels=1, image_size=2, max_images=10, seed=3)
    index = torch.round(out.images[:, 0, 0, 0] * 255).long()
    assert len(index) == 10 and index.tolist() == sorted(set(index.tolist()))
    assert torch.equal(out.labels, index % 7)


# --- refusals ------------------------------------------------------------------------------------


def test_missing_path_and_bad_arguments(tmp_path):
    refused("no such file or folder", lambda: load_user_images(tmp_path / "nope", channels=3, image_size=8),
            FileNotFoundError)
    (tmp_path / "x.csv").write_text("1,2")
    refused("neither a folder nor an .npz", lambda: load_user_images(tmp_path / "x.csv", channels=3, image_size=8))
    refused("channels must be 1 or 3", lambda: load_user_images(tmp_path, channels=2, image_size=8))


def test_empty_too_few_and_mixed_folders(tmp_path):
    (tmp_path / "README.txt").write_text("no images here")
    message = refused("found 0 images", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    assert ".png" in message and ".tiff" in message
    save(tmp_path / "a.png", pixels((4, 4)))
    refused("at least 2", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    save(tmp_path / "cls" / "b.png", pixels((4, 4)))
    refused("choose one layout", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    (tmp_path / "a.png").unlink()
    (tmp_path / "empty").mkdir()
    refused("class folder holds no images", lambda: load_user_images(tmp_path, channels=1, image_size=4))


def test_labels_beyond_the_model_are_refused(tmp_path):
    for name in ("0", "1", "12"):
        save(tmp_path / "digits" / name / "a.png", pixels((4, 4)))
    for name in ("ant", "bee", "cat"):
        save(tmp_path / "named" / name / "a.png", pixels((4, 4)))
    refused("label 12 but the model has 10 classes",
            lambda: load_user_images(tmp_path / "digits", channels=1, image_size=4, num_classes=10))
    refused("3 class folders but the model has 2 classes",
            lambda: load_user_images(tmp_path / "named", channels=1, image_size=4, num_classes=2))
    np.savez(tmp_path / "l.npz", images=pixels((3, 4, 4)), labels=np.array([0, 5, 1]))
    refused("label 5 but the model has 5 classes",
            lambda: load_user_images(tmp_path / "l.npz", channels=1, image_size=4, num_classes=5))
    np.savez(tmp_path / "n.npz", images=pixels((3, 4, 4)), labels=np.array([0, -1, 1]))
    refused("negative label", lambda: load_user_images(tmp_path / "n.npz", channels=1, image_size=4))


def test_symlinks_leading_outside_are_refused(tmp_path):
    outside = tmp_path / "outside"
    save(outside / "secret.png", pixels((4, 4)))
    root = tmp_path / "root"
    save(root / "a.png", pixels((4, 4)))
    (root / "b.png").symlink_to(outside / "secret.png")
    message = refused("refusing a symlink", lambda: load_user_images(root, channels=1, image_size=4))
    assert str(root / "b.png") in message
    classes = tmp_path / "classes"
    save(classes / "cat" / "a.png", pixels((4, 4)))
    (classes / "dog").symlink_to(outside)
    refused("refusing a symlink", lambda: load_user_images(classes, channels=1, image_size=4))


def test_entry_limit(tmp_path):
    for i in range(5):
        save(tmp_path / f"{i}.png", pixels((3, 3)))
    refused("more than 4 directory entries", lambda: load_user_images(tmp_path, channels=1, image_size=3, max_entries=4))
    assert load_user_images(tmp_path, channels=1, image_size=3, max_entries=5).images.shape[0] == 5


def test_undecodable_and_huge_images_are_refused(tmp_path):
    save(tmp_path / "a.png", pixels((4, 4)))
    (tmp_path / "b.png").write_bytes(b"\x89PNG but not really")
    message = refused("cannot be decoded as an image", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    assert str(tmp_path / "b.png") in message
    png_header_only(tmp_path / "b.png", 8193, 8192)  # just over 64 Mi pixels
    refused(r"more than 67,108,864 pixels \(8193×8192\)", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    png_header_only(tmp_path / "b.png", 20000, 20000)  # PIL itself calls this a bomb
    message = refused("more than 67,108,864 pixels", lambda: load_user_images(tmp_path, channels=1, image_size=4))
    assert str(tmp_path / "b.png") in message and "400000000" in message


def test_hostile_npz_refused(tmp_path):
    def load(name, **kw):
        return lambda: load_user_images(tmp_path / name, channels=1, image_size=4, **kw)

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    refused("not a readable .npz", load("junk.npz"))
    np.savez(tmp_path / "big.npz", images=pixels((4, 4, 4)))
    refused("more than max_bytes", load("big.npz", max_bytes=100))
    np.savez(tmp_path / "other.npz", x=pixels((4, 4, 4)), y=np.zeros(4))
    refused(r"no 'images' array \(it has: x, y\)", load("other.npz"))
    np.savez(tmp_path / "obj.npz", images=np.array([None, 1], dtype=object))
    refused("object array", load("obj.npz"))
    np.savez(tmp_path / "len.npz", images=pixels((4, 4, 4)), labels=np.arange(3))
    refused("labels of shape", load("len.npz"))
    np.savez(tmp_path / "flt.npz", images=pixels((4, 4, 4)), labels=np.zeros(4))
    refused("integer class indices", load("flt.npz"))
    np.savez(tmp_path / "nd.npz", images=pixels((4, 16)))
    refused("images of shape", load("nd.npz"))
    np.savez(tmp_path / "ch.npz", images=pixels((4, 2, 4, 4)))
    refused("with C 1 or 3", load("ch.npz"))
    np.savez(tmp_path / "255.npz", images=pixels((4, 4, 4)).astype(np.float32))
    refused("divide 0..255 values by 255", load("255.npz"))
    np.savez(tmp_path / "nan.npz", images=np.full((4, 4, 4), np.nan))
    refused("not \\[0, 1\\]", load("nan.npz"))
    np.savez(tmp_path / "i64.npz", images=pixels((4, 4, 4)).astype(np.int64))
    refused("dtype int64", load("i64.npz"))
    np.savez(tmp_path / "none.npz", images=pixels((0, 4, 4)))
    refused("holds 0 images", load("none.npz"))


def test_npz_header_claiming_more_than_it_holds(tmp_path):
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header["shape"] = (10**6, 1000, 1000)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive, archive.open("images.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 64)
    refused("claims shape", lambda: load_user_images(tmp_path / "lie.npz", channels=1, image_size=4))


def test_huge_folder_number_is_refused(tmp_path):
    for name in ("0", "99999999999999999999"):
        save(tmp_path / name / "a.png", pixels((4, 4)))
    refused("labels stop at 2", lambda: load_user_images(tmp_path, channels=1, image_size=4))
