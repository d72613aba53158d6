"""``vicious audit`` and ``vicious calibrate`` end to end, with tiny models and settings."""

from __future__ import annotations

import json
import statistics

import pytest
from defences_helpers import export_onnx, export_torchscript, tiny_classifier

from vicious.cli import main
from vicious.defences import SuiteSettings
from vicious.defences.calibration import Calibration, Reference

TINY = SuiteSettings(num_images=64, sensitivity_images=16, shadow_epochs=2, shadow_hidden=16)
VERDICTS = {"likely-honest", "inconclusive", "likely-vicious"}


HONEST = {
    "output_statistics": {"logit_norm": [1.9, 2.1, 2.0]},
    "sensitivity": {"within_class_contrast": [4.0, 4.4, 4.2]},
    "excess_leakage": {"psnr_gap": [1.5, 1.8, 1.6]},
}


@pytest.fixture()
def calibration_file(tmp_path):
    refs = [Reference(name=f"honest-{i}", seed=i, accuracy=0.8, run_dir="-") for i in range(3)]
    path = tmp_path / "calibration.json"
    Calibration.from_scores("fashion-mnist", 32, TINY, HONEST, refs).save(path)
    return path


@pytest.mark.parametrize("export", ["torchscript", "onnx"])
def test_audit_writes_scores_verdicts_thresholds_and_a_page(tmp_path, calibration_file, export, capsys):
    model = tmp_path / ("model.pt" if export == "torchscript" else "model.onnx")
    (export_torchscript if export == "torchscript" else export_onnx)(tiny_classifier(), model)
    out = tmp_path / "audit"
    assert main(["audit", str(model), "--data", "fashion-mnist", "--calibration", str(calibration_file),
                 "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["verdict"] in VERDICTS and audit["input_shape"] == [1, 32, 32] and audit["num_outputs"] == 10
    assert audit["num_images"] == 64 and 0 <= audit["accuracy"] <= 1
    for name, entry in audit["detectors"].items():
        assert entry["verdict"] in VERDICTS
        t = entry["thresholds"]
        expected = ("likely-honest" if entry["score"] <= t["likely_honest_at_most"] else
                    "likely-vicious" if entry["score"] > t["likely_vicious_above"] else "inconclusive")
        assert entry["verdict"] == expected, name
        assert entry["score"] == entry["scores"][entry["primary"]]
        # The thresholds are the calibration's (mean + 2 and + 4 sample standard deviations of the
        # honest references' primary scores), computed here independently.
        (primary, honest), = HONEST[name].items()
        assert entry["primary"] == primary
        mean, sd = statistics.mean(honest), statistics.stdev(honest)
        assert t["likely_honest_at_most"] == pytest.approx(mean + 2 * sd)
        assert t["likely_vicious_above"] == pytest.approx(mean + 4 * sd)
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and audit["verdict"] in page
    assert "verdict:" in capsys.readouterr().out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vicious: error: ") and "\n" not in err
    return err


def test_audit_refuses_what_it_cannot_audit(tmp_path, calibration_file, capsys):
    common = ["--data", "fashion-mnist", "--calibration", str(calibration_file), "--out", str(tmp_path / "out")]
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["audit", str(tmp_path / "notes.txt"), *common]) == 2
    assert "is not a model" in _error(capsys)
    export_torchscript(tiny_classifier(outputs=7), tmp_path / "k7.pt")
    assert main(["audit", str(tmp_path / "k7.pt"), *common]) == 2
    assert "gives 7 outputs per image but fashion-mnist has K = 10" in _error(capsys)
    export_onnx(tiny_classifier(channels=3), tmp_path / "rgb.onnx")
    assert main(["audit", str(tmp_path / "rgb.onnx"), *common]) == 2
    assert "expects input (N, 3, 32, 32)" in _error(capsys)
    assert not (tmp_path / "out").exists()  # nothing written for a refused model


def test_audit_without_a_calibration_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "empty-cache"))
    export_torchscript(tiny_classifier(), tmp_path / "model.pt")
    assert main(["audit", str(tmp_path / "model.pt"), "--data", "fashion-mnist", "--out", str(tmp_path / "a")]) == 2
    assert "vicious calibrate --data fashion-mnist" in _error(capsys)


def test_calibrate_then_audit_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    assert main(["calibrate", "--data", "fashion-mnist", "--num-models", "2", "--train-limit", "128", "--epochs", "1",
                 "--num-images", "64", "--shadow-epochs", "2", "--image-size", "16"]) == 0
    saved = tmp_path / "cache" / "calibration" / "fashion-mnist-16px.json"
    calibration = Calibration.load(saved)
    assert len(calibration.references) == 2 and calibration.settings.num_images == 64
    assert all(len(v) == 2 for subs in calibration.honest_scores.values() for v in subs.values())
    run_dir = tmp_path / "cache" / "calibration" / "fashion-mnist-16px-references" / "honest-1"
    out = tmp_path / "audit-run"
    assert main(["audit", str(run_dir), "--data", "fashion-mnist", "--image-size", "16", "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    # A reference audited against its own calibration scores what it scored then.
    for name, entry in audit["detectors"].items():
        assert entry["score"] == pytest.approx(calibration.honest_scores[name][entry["primary"]][0], rel=1e-4, abs=1e-6)
    assert audit["calibration"]["path"] == str(saved)
