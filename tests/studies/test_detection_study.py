"""The detection and frontier tables of a sweep that varies an attacker's settings."""

from __future__ import annotations

import pytest
from sweep_helpers import write_grid

from vicious.defences.black_box import open_classifier
from vicious.defences.suite import PRIMARY, score_classifier
from vicious.runs.layout import open_run
from vicious.studies.detection_study import SCORES_FILE, audit_calibration
from vicious.studies.sweep import load_grid, run_sweep
from vicious.studies.table import build_tables


@pytest.fixture(scope="module")
def attacker_sweep(tmp_path_factory):
    from vicious.studies.executors import LocalExecutor

    folder = tmp_path_factory.mktemp("attacker-sweep")
    grid = write_grid(folder / "attackers.yaml", preset="fashion-mnist-vicious-small",
                      vary={"loss.beta_ent": [0.0, 3.0]}, set={"train.precision": "32-true"})
    summary = run_sweep(load_grid(grid), folder / "out", LocalExecutor(), echo=lambda line: None)
    assert not summary["failed"], summary
    return folder / "out"


def test_every_attacker_is_audited_and_the_frontier_is_the_best_that_passes(attacker_sweep):
    tables = {t.key: t for t in build_tables(attacker_sweep)}
    detection, frontier = tables["detection"], tables["frontier"]
    column = {c.key: i for i, c in enumerate(detection.columns)}
    assert len(detection.rows) == 2
    calibration = audit_calibration("fashion-mnist", 32)
    # One run's scores, recomputed here from its classifier with the calibration's settings.
    row = detection.rows[0]
    run = open_run(attacker_sweep / row[column["run"]])
    images = run.splits.test.subset(calibration.settings.num_images, seed=calibration.settings.seed)
    with open_classifier(run.path, run.splits.info, 32, trusted=True) as box:
        scores = score_classifier(box, images.float_images(), calibration.settings, images.labels).scores
    for detector in PRIMARY:
        assert row[column[detector]] == pytest.approx(scores[detector][PRIMARY[detector]], rel=1e-4, abs=1e-5)
        assert row[column[f"{detector}_verdict"]] == calibration.thresholds[detector].verdict(row[column[detector]])
    # The frontier: per detector, the best PSNR among the rows it calls likely-honest.
    frontier_column = {c.key: i for i, c in enumerate(frontier.columns)}
    best_accuracy = max(r[column["accuracy"]] for r in detection.rows)
    kept = [r for r in detection.rows if r[column["accuracy"]] >= best_accuracy - 0.05]  # the others gave up the task
    for line in frontier.rows:
        name = line[frontier_column["detector"]]
        assert line[frontier_column["attackers"]] == len(kept)
        if name == "all detectors":
            passing = [r for r in kept if all(r[column[f"{d}_verdict"]] == "likely-honest" for d in PRIMARY)]
        else:
            passing = [r for r in kept if r[column[f"{name}_verdict"]] == "likely-honest"]
        assert line[frontier_column["passing"]] == len(passing)
        assert line[frontier_column["psnr"]] == (max(r[column["psnr"]] for r in passing) if passing else None)
    # Scores were kept beside each run: a second table reads them back.
    stamps = [(attacker_sweep / r[column["run"]] / SCORES_FILE).stat().st_mtime_ns for r in detection.rows]
    build_tables(attacker_sweep)
    assert stamps == [(attacker_sweep / r[column["run"]] / SCORES_FILE).stat().st_mtime_ns for r in detection.rows]


def test_a_sweep_without_attacker_settings_has_no_detection_tables(tmp_path):
    from vicious.studies.table import tables_for

    assert not [t for t in tables_for([], []) if t.key in ("detection", "frontier")]
