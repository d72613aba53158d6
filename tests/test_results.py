"""The schema of metrics.json (vicious.runs.results): what the evaluation writes reads
back typed; an older, shorter file still reads; a wrong field is one line naming it."""

import json
import math

import pytest

from vicious.runs.results import RunResult, check_run_result, read_run_result

# A metrics.json of an early vicious: no label-only floor, no re-identification, no intervals.
OLD = {"regime": "honest", "dataset": "mnist", "output": "softmax", "seed": 3, "num_outputs": 10,
       "accuracy": 0.98, "mse": 0.03, "psnr": 15.2, "ssim": 0.41,
       "risk": {"exact": {"mean": 0.9, "median": 0.8, "frac_above_one": 0.3}}}


def test_an_older_shorter_file_reads_and_unknown_keys_are_kept(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({**OLD, "from_the_future": {"x": 1}}))
    raw, result = read_run_result(tmp_path)
    assert result.risk.exact.frac_above_one == 0.3 and result.risk.principal is None
    assert result.label_only is None and result.reidentification is None and result.confidence_intervals == {}
    assert raw["from_the_future"] == {"x": 1} and result.model_extra == {"from_the_future": {"x": 1}}


def test_nan_and_integers_are_numbers_but_text_and_booleans_are_not(tmp_path):
    result = check_run_result({**OLD, "ssim": float("nan"), "mse": 0}, tmp_path / "metrics.json")
    assert math.isnan(result.ssim) and result.mse == 0.0
    for value in ("0.5", True):
        with pytest.raises(ValueError, match=r"'ssim' must be a number, got " + repr(value)):
            check_run_result({**OLD, "ssim": value}, tmp_path / "metrics.json")


@pytest.mark.parametrize("change, message", [
    ({"confidence_intervals": {"mse": [0.1, "x"]}}, "'confidence_intervals.mse' must be [low, high], got [0.1, 'x']"),
    ({"confidence_intervals": {"mse": [0.1]}}, "'confidence_intervals.mse' must be [low, high], got [0.1]"),
    ({"risk": {"principal": {"components": 2.5}}}, "'risk.principal.components' must be an integer, got 2.5"),
    ({"label_only": {"reidentification": {"pixel": 1}}}, "'label_only.reidentification.pixel' must be a mapping"),
])
def test_a_wrong_field_is_named_with_the_fix(tmp_path, change, message):
    with pytest.raises(ValueError) as err:
        check_run_result({**OLD, **change}, tmp_path / "run" / "metrics.json")
    assert str(err.value).startswith(f"{tmp_path / 'run' / 'metrics.json'}: {message}")
    assert str(err.value).endswith(f"re-evaluate it with 'vicious evaluate {tmp_path / 'run'}'")


def test_a_missing_identity_field_is_named(tmp_path):
    with pytest.raises(ValueError, match="'dataset' is missing"):
        check_run_result({k: v for k, v in OLD.items() if k != "dataset"}, tmp_path / "metrics.json")
    assert RunResult.model_validate(OLD).dataset == "mnist"
