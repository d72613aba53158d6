"""An audit on the user's own images: an ONNX model and a folder of PNG files, end to end."""

from __future__ import annotations

import json

import pytest
from defences_helpers import export_onnx, tiny_classifier
from PIL import Image

from vicious.cli import main
from vicious.data import load_dataset
from vicious.defences.calibration import Calibration, own_images_split
from vicious.defences.suite import SuiteSettings

TINY = ["--num-images", "64", "--shadow-epochs", "2"]
OWN_MODEL = ["--unconfined-model-code"]


def _write_pngs(folder, images, labels=None) -> None:
    """Images (N, 1, S, S) uint8 as PNG files, in class folders named by label when labels are given."""
    for i, image in enumerate(images):
        where = folder / str(int(labels[i])) if labels is not None else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(where / f"{i:04d}.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """150 Fashion-MNIST test images at 16 px as PNG files: labelled (class folders) and unlabelled."""
    root = tmp_path_factory.mktemp("own")
    test = load_dataset("fashion-mnist", image_size=16).test.subset(150, seed=3)
    _write_pngs(root / "labelled", test.images, test.labels)
    _write_pngs(root / "unlabelled", test.images[:60])
    return root, test


def test_calibrate_and_audit_an_onnx_model_on_a_folder_of_pngs(photos, tmp_path, monkeypatch, capsys):
    root, test = photos
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.onnx"
    export_onnx(tiny_classifier(), model, size=16)  # declares its input (N, 1, 16, 16)
    labelled = root / "labelled"
    # No calibration of these images yet: the message says how to make one.
    assert main(["audit", str(model), "--data", str(labelled), "--out", str(tmp_path / "a0")]) == 2
    assert f"vicious calibrate --data {labelled}" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(labelled), "--image-size", "16", "--num-classes", "10", *TINY]) == 0
    saved = next((tmp_path / "cache" / "calibration").glob("images-*-16px.json"))
    calibration = Calibration.load(saved)
    assert (calibration.channels, calibration.num_outputs, calibration.image_size) == (1, 10, 16)  # grey PNGs: C = 1
    # The audit reads the size and channels from the model (no --image-size) and finds the calibration.
    out = tmp_path / "audit"
    assert main(["audit", str(model), "--data", str(labelled), "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    scored, _ = own_images_split(150, True, SuiteSettings(num_images=64))
    assert audit["num_images"] == len(scored) == 50 and audit["labelled"] and audit["calibration"]["path"] == str(saved)
    assert audit["input_shape"] == [1, 16, 16] and audit["num_outputs"] == 10
    # Accuracy on the scored third, against the folder names, computed here independently: the
    # folder lists class folders in name order, then files in name order.
    in_folder_order = sorted(range(150), key=lambda i: (str(int(test.labels[i])), i))
    chosen = [in_folder_order[int(j)] for j in scored]
    predicted = tiny_classifier()(test.float_images()[chosen]).argmax(1)
    assert audit["accuracy"] == pytest.approx(float((predicted == test.labels[chosen]).float().mean()))
    assert (out / "audit.html").read_text().count("data:image/png;base64,") == 2


@pytest.fixture(scope="module")
def calibration(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "labelled.json"
    assert main(["calibrate", "--data", str(photos[0] / "labelled"), "--image-size", "16", "--num-classes", "10",
                 "--out", str(path), *TINY]) == 0
    return path


def test_unlabelled_images_need_a_named_calibration_and_give_no_accuracy(photos, calibration, tmp_path, monkeypatch,
                                                                         capsys):
    root, _ = photos
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.onnx"
    export_onnx(tiny_classifier(), model, size=16)
    unlabelled = root / "unlabelled"
    assert main(["audit", str(model), "--data", str(unlabelled), "--out", str(tmp_path / "a0")]) == 2
    assert "unlabelled" in capsys.readouterr().err
    out = tmp_path / "audit"
    assert main(["audit", str(model), "--data", str(unlabelled), "--calibration", str(calibration),
                 "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["num_images"] == 60 and not audit["labelled"] and audit["accuracy"] is None
    # Calibrating needs labels, and says so.
    assert main(["calibrate", "--data", str(unlabelled), "--image-size", "16"]) == 2
    assert "holds no labels" in capsys.readouterr().err


def test_a_model_of_another_kind_than_the_calibration_is_named(photos, calibration, tmp_path, capsys):
    root, _ = photos
    model = tmp_path / "model.onnx"
    export_onnx(tiny_classifier(outputs=4), model, size=16)
    assert main(["audit", str(model), "--data", str(root / "unlabelled"), "--calibration", str(calibration),
                 "--out", str(tmp_path / "a")]) == 2
    assert "K = 10, not (1, 16, 16) and K = 4" in capsys.readouterr().err
