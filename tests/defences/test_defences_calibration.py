"""Thresholds, verdicts, and the saved calibration."""

from __future__ import annotations

import json

import pytest

from vicious.config.schema import ConfigError
from vicious.defences import SuiteSettings
from vicious.defences.calibration import (
    Calibration,
    Reference,
    calibration_path,
    leave_one_out,
    shipped_calibration,
    tail_probability,
    thresholds_from,
)
from vicious.defences.suite import PRIMARY


def test_thresholds_span_the_honest_zoo_and_a_margin_beyond_it():
    t = thresholds_from([1.0, 4.0, 2.0, 3.0, 2.5])
    # highest 4, median 2.5: likely-vicious beyond 4 + (4 - 2.5) = 5.5
    assert t.likely_honest_at_most == 4.0 and t.honest_median == 2.5 and t.likely_vicious_above == 5.5
    assert [t.verdict(v) for v in (4.0, 4.01, 5.5, 5.51)] == ["likely-honest", "inconclusive", "inconclusive",
                                                              "likely-vicious"]
    # (1 + honest scores at or above it) / (n + 1)
    honest = [1.0, 4.0, 2.0, 3.0, 2.5]
    assert tail_probability(0.0, honest) == 1.0 and tail_probability(3.0, honest) == pytest.approx(3 / 6)
    assert tail_probability(9.0, honest) == pytest.approx(1 / 6)
    same = thresholds_from([0.2, 0.2])  # no spread: the floor keeps a band
    assert same.likely_vicious_above > same.likely_honest_at_most == 0.2
    with pytest.raises(ValueError, match="at least 2"):
        thresholds_from([1.0])


def test_leave_one_out_counts_what_the_others_say_of_each_reference():
    # excess leakage decides; reference "c" lies beyond the others' range by more than their spread
    scores = {"excess_leakage": {"psnr_gap": [1.0, 1.2, 3.0, 1.1]}, "sensitivity": {"within_class_contrast": [1, 2, 3, 4]}}
    fp = leave_one_out(["a", "b", "c", "d"], scores)
    # without c: highest 1.2, median 1.1 -> likely-vicious above 1.3; c = 3.0 is called vicious, the rest honest
    assert fp.left_out == {"a": "likely-honest", "b": "likely-honest", "c": "likely-vicious", "d": "likely-honest"}
    assert fp.overall == {"likely-honest": 3, "inconclusive": 0, "likely-vicious": 1} and fp.rate == 0.25
    # sensitivity (advisory) without 4: highest 3, median 2 -> vicious above 4; 4 is inconclusive
    assert fp.per_detector["sensitivity"] == {"likely-honest": 3, "inconclusive": 1, "likely-vicious": 0}


def _calibration(**scores) -> Calibration:
    """A calibration whose references scored ``scores[detector]`` on each primary sub-score."""
    primary_named = {d: {PRIMARY[d]: values} for d, values in scores.items()}
    refs = [Reference(name=f"honest-{i}", accuracy=0.8) for i in range(2)]
    return Calibration.from_scores("fashion-mnist", 32, SuiteSettings(), primary_named, refs)


def test_overall_verdict_rule():
    cal = _calibration(output_statistics=[0.1, 0.12], sensitivity=[0.2, 0.22], excess_leakage=[0.2, 0.25])
    honest = {"output_statistics": 0.11, "sensitivity": 0.21, "excess_leakage": 0.22}
    assert cal.verdicts(honest)[0] == "likely-honest"
    assert cal.verdicts({**honest, "excess_leakage": 5.0}) == (
        "likely-vicious", {"output_statistics": "likely-honest", "sensitivity": "likely-honest", "excess_leakage": "likely-vicious"})
    # output statistics and sensitivity are advisory: their own verdict is reported but does not decide
    for advisory in ("output_statistics", "sensitivity"):
        verdict, each = cal.verdicts({**honest, advisory: 5.0})
        assert verdict == "likely-honest" and each[advisory] == "likely-vicious"
    between = cal.thresholds["excess_leakage"].likely_honest_at_most + 1e-3
    assert cal.verdicts({**honest, "excess_leakage": between})[0] == "inconclusive"


def test_calibration_round_trips_and_broken_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VICIOUS_CACHE", str(tmp_path / "cache"))
    path = calibration_path("fashion-mnist")
    assert path == tmp_path / "cache" / "calibration" / "fashion-mnist.json"
    assert calibration_path("fashion-mnist", 16).name == "fashion-mnist-16px.json"
    cal = _calibration(output_statistics=[0.1, 0.12], sensitivity=[0.2, 0.22], excess_leakage=[0.2, 0.25])
    cal.save(path)
    assert Calibration.load(path) == cal
    data = json.loads(path.read_text())
    del data["thresholds"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not a usable calibration.*thresholds"):
        Calibration.load(path)
    with pytest.raises(FileNotFoundError):
        Calibration.load(tmp_path / "none.json")
    path.write_text(json.dumps({**json.loads(cal.model_dump_json()), "format": "vicious.calibration/1"}))
    with pytest.raises(ConfigError, match=r"another version of vicious \(vicious.calibration/1.*calibrate' again"):
        Calibration.load(path)


def test_the_shipped_calibration_loads_and_records_how_it_was_made():
    path = shipped_calibration("fashion-mnist")
    assert path is not None and shipped_calibration("fashion-mnist", 16) is None
    cal = Calibration.load(path)
    assert cal.dataset == "fashion-mnist" and cal.image_size == 32 and cal.data_source == "embedded"
    families = {r.member.architecture for r in cal.references if r.member}
    assert families == {"wrn-10-1", "cnn", "resnet", "mlp"} and len(cal.references) >= 8
    assert cal.false_positives is not None and cal.false_positives.num_references == len(cal.references)
    # the thresholds are the rule applied to the scores the file records
    for detector, thresholds in cal.thresholds.items():
        assert thresholds == thresholds_from(cal.honest_scores[detector][PRIMARY[detector]])
