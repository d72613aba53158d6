"""``vicious audit`` and ``vicious calibrate`` end to end, with tiny models and settings."""

from __future__ import annotations

import html
import json
import statistics

import pytest
from defences_helpers import export_onnx, export_torchscript, tiny_classifier

from vicious.cli import main
from vicious.defences import SuiteSettings
from vicious.defences.calibration import Calibration, Reference
from vicious.defences.report import verdict_sentence

TINY = SuiteSettings(num_images=64, sensitivity_images=16, shadow_epochs=2, shadow_hidden=16)
VERDICTS = {"likely-honest", "inconclusive", "likely-vicious"}
# The test models are our own: they may run also where no sandbox is available (then with
# the limits only); where bubblewrap works, they run sandboxed all the same.
OWN_MODEL = ["--unconfined-model-code"]


HONEST = {
    "output_statistics": {"logit_norm": [1.9, 2.1, 2.0]},
    "sensitivity": {"within_class_contrast": [4.0, 4.4, 4.2]},
    "excess_leakage": {"psnr_gap": [1.5, 1.8, 1.6]},
}


@pytest.fixture()
def calibration_file(tmp_path):
    refs = [Reference(name=f"honest-{i}", accuracy=0.8) for i in range(3)]
    path = tmp_path / "calibration.json"
    Calibration.from_scores("fashion-mnist", 32, TINY, HONEST, refs).save(path)
    return path


@pytest.mark.parametrize("export", ["torchscript", "onnx"])
def test_audit_writes_scores_verdicts_thresholds_and_a_page(tmp_path, calibration_file, export, capsys):
    model = tmp_path / ("model.pt" if export == "torchscript" else "model.onnx")
    (export_torchscript if export == "torchscript" else export_onnx)(tiny_classifier(), model)
    out = tmp_path / "audit"
    assert main(["audit", str(model), "--data", "fashion-mnist", "--calibration", str(calibration_file),
                 "--out", str(out), *OWN_MODEL]) == 0
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
        # The thresholds are the calibration's (the highest honest score, and beyond it by the distance
        # from the median to the highest), computed here independently.
        (primary, honest), = HONEST[name].items()
        assert entry["primary"] == primary
        assert t["likely_honest_at_most"] == max(honest)
        assert t["likely_vicious_above"] == pytest.approx(2 * max(honest) - statistics.median(honest))
        assert entry["tail_probability"] == pytest.approx((1 + sum(h >= entry["score"] for h in honest)) / 4)
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and audit["verdict"] in page
    assert "What this means, and what it does not" in page and "What to do next" in page
    printed = capsys.readouterr().out
    assert "verdict:" in printed and verdict_sentence(audit) in printed and html.escape(verdict_sentence(audit)) in page


def _entry(verdict, role="deciding"):
    return {"verdict": verdict, "role": role}


@pytest.mark.parametrize("verdict, detectors, named", [
    ("likely-vicious", {"excess_leakage": _entry("likely-vicious"), "sensitivity": _entry("likely-honest"),
                        "output_statistics": _entry("likely-vicious", "advisory")}, "Likely vicious: excess leakage scored"),
    ("inconclusive", {"excess_leakage": _entry("likely-honest"), "sensitivity": _entry("inconclusive")},
     "Inconclusive: sensitivity scored above"),
    ("likely-honest", {"excess_leakage": _entry("likely-honest"), "sensitivity": _entry("likely-honest"),
                       "output_statistics": _entry("likely-vicious", "advisory")},
     "Likely honest: every deciding detector (excess leakage, sensitivity)"),
])
def test_the_verdict_sentence_names_the_deciding_detectors_that_set_it(verdict, detectors, named):
    sentence = verdict_sentence({"verdict": verdict, "detectors": detectors})
    assert sentence.startswith(named) and "output statistics" not in sentence  # advisory detectors never decide


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vicious: error: ") and "\n" not in err
    return err


def test_audit_refuses_what_it_cannot_audit(tmp_path, calibration_file, capsys):
    common = ["--data", "fashion-mnist", "--calibration", str(calibration_file), "--out", str(tmp_path / "out"),
              *OWN_MODEL]
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
    export_torchscript(tiny_classifier(), tmp_path / "model.pt", size=16)  # no calibration ships for 16 px
    assert main(["audit", str(tmp_path / "model.pt"), "--data", "fashion-mnist", "--image-size", "16",
                 "--out", str(tmp_path / "a"), *OWN_MODEL]) == 2
    assert "vicious calibrate --data fashion-mnist" in _error(capsys)


def test_calibrate_then_audit_a_reference_of_the_zoo(tmp_path, monkeypatch, capsys):
    """A zoo member, trained again by its recipe and audited from a file, scores what it scored
    in the calibration and is judged against the others."""
    from vicious.data import load_dataset
    from vicious.defences.zoo import DEFAULT_ZOO, Released, train_reference
    from vicious.runs.hardware import cpu_has_native_bf16

    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    assert main(["calibrate", "--data", "fashion-mnist", "--train-limit", "128", "--num-images", "64",
                 "--shadow-epochs", "2", "--image-size", "16"]) == 0
    assert "leave one out:" in capsys.readouterr().out
    saved = tmp_path / "cache" / "calibration" / "fashion-mnist-16px.json"
    calibration = Calibration.load(saved)
    assert [r.name for r in calibration.references] == [m.name for m in DEFAULT_ZOO]
    assert calibration.settings.num_images == 64 and calibration.false_positives.num_references == len(DEFAULT_ZOO)
    assert all(len(v) == len(DEFAULT_ZOO) for subs in calibration.honest_scores.values() for v in subs.values())
    splits = load_dataset("fashion-mnist", image_size=16)
    train = splits.train.subset(128, seed=0)
    member = DEFAULT_ZOO[2]  # releases probabilities
    network = train_reference(member, train.float_images(), train.labels, splits.info, 16, bf16=cpu_has_native_bf16())
    export_torchscript(Released(network, member.form, "multiclass"), tmp_path / "member.pt", size=16, channels=1)
    out = tmp_path / "audit-member"
    assert main(["audit", str(tmp_path / "member.pt"), "--data", "fashion-mnist", "--image-size", "16",
                 "--out", str(out), *OWN_MODEL]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["output_form"] == "probabilities" and audit["calibration"]["path"] == str(saved)
    for name, entry in audit["detectors"].items():
        assert entry["score"] == pytest.approx(calibration.honest_scores[name][entry["primary"]][2], rel=1e-4, abs=1e-6)
        # it is one of the n references: at least 1 + 1 of the n + 1 lie at or above it
        assert entry["tail_probability"] >= 2 / (len(DEFAULT_ZOO) + 1)
    assert audit["verdict"] == "likely-honest"  # within the range it is part of


@pytest.mark.parametrize("export", ["torchscript", "onnx"])
def test_the_sandbox_changes_no_score_and_no_verdict(tmp_path, calibration_file, monkeypatch, export):
    """The sandboxed worker computes exactly what the same model computes in this process."""
    import functools

    from vicious.defences import audit as audit_module
    from vicious.defences.black_box import open_classifier

    model = tmp_path / ("model.pt" if export == "torchscript" else "model.onnx")
    (export_torchscript if export == "torchscript" else export_onnx)(tiny_classifier(seed=3), model)
    common = ["--data", "fashion-mnist", "--calibration", str(calibration_file), *OWN_MODEL]
    assert main(["audit", str(model), *common, "--out", str(tmp_path / "sandboxed")]) == 0
    monkeypatch.setattr(audit_module, "open_classifier", functools.partial(open_classifier, trusted=True))
    assert main(["audit", str(model), *common, "--out", str(tmp_path / "in-process")]) == 0
    sandboxed, in_process = (json.loads((tmp_path / name / "audit.json").read_text())
                             for name in ("sandboxed", "in-process"))
    assert sandboxed["verdict"] == in_process["verdict"] and sandboxed["accuracy"] == in_process["accuracy"]
    assert {n: e["scores"] for n, e in sandboxed["detectors"].items()} == \
        {n: e["scores"] for n, e in in_process["detectors"].items()}
    assert sandboxed["excess_leakage_details"] == in_process["excess_leakage_details"]


def test_the_library_defaults_are_what_the_command_line_says():
    from vicious.cli import build_parser
    from vicious.cli import defences as cli
    from vicious.defences.calibration import REFERENCE_IMAGES
    from vicious.defences.sandbox import SandboxLimits

    limits = SandboxLimits()
    assert (limits.wall_s, limits.cpu_s, limits.memory_bytes) == (cli.TIME_LIMIT_S, cli.CPU_LIMIT_S, cli.MEMORY_LIMIT)
    assert cli.REFERENCE_IMAGES == REFERENCE_IMAGES
    parsed = build_parser().parse_args(["calibrate", "--data", "fashion-mnist"])
    assert (parsed.num_images, parsed.shadow_epochs) == (SuiteSettings().num_images, SuiteSettings().shadow_epochs)
    assert [cli._size(t) for t in ("8G", "512M", "4GiB", "1.5G", "1024")] == [8 << 30, 512 << 20, 4 << 30, 3 << 29, 1024]


def test_an_audit_folder_in_use_is_refused_and_left_as_it_was(tmp_path, calibration_file, capsys):
    import signal
    import subprocess
    import sys

    model, out = tmp_path / "model.onnx", tmp_path / "audit"
    export_onnx(tiny_classifier(), model)
    hold = ("import sys\nfrom vicious.runs.locks import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n")
    other = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline() == "held\n"
        before = sorted(p.name for p in out.iterdir())
        assert main(["audit", str(model), "--data", "fashion-mnist", "--calibration", str(calibration_file),
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by pid {other.pid}" in err[0]
        assert sorted(p.name for p in out.iterdir()) == before  # no audit.json, no audit.html
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_a_score_above_every_reference_is_said_so():
    from vicious.defences.report import tail_text

    assert tail_text(1 / 9, 8).startswith("above all 8 honest references (tail probability 0.11")
    assert tail_text(4 / 9, 8) == "tail probability 0.44 of n = 8"
