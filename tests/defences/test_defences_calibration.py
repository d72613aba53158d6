"""Thresholds, verdicts, and the saved calibration."""

from __future__ import annotations

import json

import pytest

from vicious.config.schema import ConfigError
from vicious.defences import SuiteSettings
from vicious.defences.calibration import Calibration, Reference, calibration_path, thresholds_from
from vicious.defences.suite import PRIMARY


def test_thresholds_are_mean_plus_two_and_four_standard_deviations():
    t = thresholds_from([1.0, 2.0, 3.0, 4.0])
    sd = (5 / 3) ** 0.5  # sample std of 1..4
    assert t.honest_mean == pytest.approx(2.5) and t.honest_std == pytest.approx(sd)
    assert t.likely_honest_at_most == pytest.approx(2.5 + 2 * sd)
    assert t.likely_vicious_above == pytest.approx(2.5 + 4 * sd)
    assert t.verdict(2.5 + 2 * sd) == "likely-honest"
    assert t.verdict(2.5 + 3 * sd) == "inconclusive"
    assert t.verdict(2.5 + 4.01 * sd) == "likely-vicious"
    same = thresholds_from([0.2, 0.2])  # no spread: the floor keeps a band
    assert same.likely_vicious_above > same.likely_honest_at_most > 0.2
    with pytest.raises(ValueError, match="at least 2"):
        thresholds_from([1.0])


def _calibration(**scores) -> Calibration:
    """A calibration whose references scored ``scores[detector]`` on each primary sub-score."""
    primary_named = {d: {PRIMARY[d]: values} for d, values in scores.items()}
    refs = [Reference(name=f"honest-{i}", seed=i, accuracy=0.8, run_dir="-") for i in range(2)]
    return Calibration.from_scores("fashion-mnist", 32, SuiteSettings(), primary_named, refs)


def test_overall_verdict_rule():
    cal = _calibration(output_statistics=[0.1, 0.12], sensitivity=[0.2, 0.22], excess_leakage=[0.2, 0.25])
    honest = {"output_statistics": 0.11, "sensitivity": 0.21, "excess_leakage": 0.22}
    assert cal.verdicts(honest)[0] == "likely-honest"
    assert cal.verdicts({**honest, "excess_leakage": 5.0}) == (
        "likely-vicious", {"output_statistics": "likely-honest", "sensitivity": "likely-honest", "excess_leakage": "likely-vicious"})
    assert cal.verdicts({**honest, "sensitivity": 5.0})[0] == "likely-vicious"  # either deciding detector may flag
    # output statistics are advisory: their own verdict is reported but does not decide
    verdict, each = cal.verdicts({**honest, "output_statistics": 5.0})
    assert verdict == "likely-honest" and each["output_statistics"] == "likely-vicious"
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
