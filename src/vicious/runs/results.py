"""A run's result: the schema of ``metrics.json``, for its writer and every reader.

The evaluation (``vicious.runs.evaluation``) validates what it writes against
``RunResult``; the tables (and the sweep report, through them) read the file through
``read_run_result``, which refuses, in one line naming the file and the field, anything
else; the sweep's status and ``vicious evaluate`` read the evaluation's record as a
``RunResult``. Every measure is
optional (a file of an older vicious may lack the newer ones) and may be NaN or infinite
(a diverged run); keys the schema does not know are kept, so newer files still read.

Layout (numbers are per test split; ``label_only`` holds the same reconstruction measures
for the label-only floor; intervals are 95% bootstrap percentiles)::

    regime, dataset, output, preset, seed, release, num_outputs, num_test_images, accuracy,
    mse, psnr, psnr_per_image_mean, ssim,
    risk: {exact: {mean, median, frac_above_one}, principal: {..., variance_fraction, components}},
    reidentification: {pixel: {top1, top5}, principal: {top1, top5}},
    label_only: {mse, psnr, ..., risk, reidentification},
    confidence_intervals: {accuracy, mse, psnr_per_image, ssim, risk_exact, risk_principal: [low, high]},
    accuracy_per_attribute: {name: accuracy}   (multi-attribute tasks)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt, StrictStr, ValidationError

from vicious.runs.files import read_json

METRICS_FILE = "metrics.json"


def _number(value: Any) -> float:
    # A JSON number: a float or an int (not a bool, not a string that looks like one).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RiskSummary(_Record):
    mean: Number | None = None
    median: Number | None = None
    frac_above_one: Number | None = None
    variance_fraction: Number | None = None  # principal only
    components: StrictInt | None = None  # principal only


class Risk(_Record):
    exact: RiskSummary | None = None
    principal: RiskSummary | None = None


class TopK(_Record):
    top1: Number | None = None
    top5: Number | None = None


class Reidentification(_Record):
    pixel: TopK | None = None
    principal: TopK | None = None


class ReconstructionMeasures(_Record):
    """What a reconstruction reveals (``vicious.runs.evaluation.reconstruction_measures``)."""

    mse: Number | None = None
    psnr: Number | None = None
    psnr_per_image_mean: Number | None = None
    ssim: Number | None = None
    risk: Risk | None = None
    reidentification: Reidentification | None = None


class RunResult(ReconstructionMeasures):
    """``metrics.json``: what was measured, of which run."""

    regime: StrictStr
    dataset: StrictStr
    output: StrictStr
    seed: StrictInt
    num_outputs: StrictInt
    preset: StrictStr | None = None
    release: StrictStr | None = None  # the release policy the measures were taken behind ("none", "top-3", ...)
    num_test_images: StrictInt | None = None
    accuracy: Number | None = None
    label_only: ReconstructionMeasures | None = None
    confidence_intervals: dict[str, tuple[Number, Number]] = {}
    accuracy_per_attribute: dict[str, Number] | None = None


_WHAT = {"string_type": "must be text", "int_type": "must be an integer", "model_type": "must be a mapping",
         "dict_type": "must be a mapping", "tuple_type": "must be [low, high]", "too_short": "must be [low, high]",
         "too_long": "must be [low, high]", "missing": "is missing"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_error(err: ValidationError, data: Any) -> str:
    """The first problem, as ``'risk.exact' must be a mapping, got [1]``."""
    first = err.errors()[0]
    loc, kind, found = [str(part) for part in first["loc"]], first["type"], first.get("input")
    if loc[:1] == ["confidence_intervals"] and len(loc) > 2:  # one bound of an interval: show the interval
        loc, kind = loc[:2], "tuple_type"
        found = data[loc[0]][loc[1]]
    what = str(first["msg"]).removeprefix("Value error, ") if kind == "value_error" else _WHAT.get(kind, first["msg"])
    if kind == "missing":
        return f"'{'.'.join(loc)}' {what}"
    return f"'{'.'.join(loc)}' {what}, got {_short(found)}"


def check_run_result(metrics: Any, path: Path) -> RunResult:
    """``metrics`` as a RunResult, or a one-line ValueError naming ``path``, the field and the fix."""
    fix = f"re-evaluate it with 'vicious evaluate {path.parent}'"
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} does not hold a metrics mapping; {fix}")
    try:
        return RunResult.model_validate(metrics)
    except ValidationError as err:
        raise ValueError(f"{path}: {describe_error(err, metrics)}; {fix}") from None


def read_run_result(run_dir: Path) -> tuple[dict, RunResult]:
    """A run's ``metrics.json``, as read (a dict, for the measures' key paths) and validated."""
    path = Path(run_dir) / METRICS_FILE
    try:
        metrics = read_json(path, what="metrics record")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; re-evaluate it with 'vicious evaluate {path.parent}'") from None
    return metrics, check_run_result(metrics, path)
