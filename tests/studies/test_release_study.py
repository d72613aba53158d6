"""The release table of a sweep: arms (a) blind, (b) decoder retrained, (c) trained through,
and the label-only floor, from a grid whose axis sets several release keys at once."""

from __future__ import annotations

import json

import pytest
import torch
from sweep_helpers import write_grid

from vicious.metrics import psnr_from_mse
from vicious.release.policies import TopK
from vicious.runs.evaluation import reconstruct
from vicious.runs.layout import open_run
from vicious.studies.release_study import ARMS, NO_POLICY, release_points
from vicious.studies.report import build_report
from vicious.studies.sweep import expand_grid, load_grid, run_sweep
from vicious.studies.table import build_tables, render

RELEASES = [{"policy": "none"}, {"policy": "topk", "k": 1}, {"policy": "label-only"}]


def test_a_mapping_axis_sets_each_of_its_keys(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", preset="fashion-mnist-vicious-small", vary={"release": RELEASES})
    cells = expand_grid(load_grid(grid))
    assert [c.name for c in cells] == ["fashion-mnist-vicious-small__release.policy=none",
                                       "fashion-mnist-vicious-small__release.k=1__release.policy=topk",
                                       "fashion-mnist-vicious-small__release.policy=label-only"]
    assert [(c.config.release.policy, c.config.release.k) for c in cells] == [("none", 3), ("topk", 1),
                                                                                ("label-only", 3)]


@pytest.fixture(scope="module")
def release_sweep(tmp_path_factory):
    from vicious.studies.executors import LocalExecutor

    folder = tmp_path_factory.mktemp("release-sweep")
    grid = write_grid(folder / "release.yaml", preset="fashion-mnist-vicious-small",
                      vary={"release": RELEASES}, set={"train.precision": "32-true"})
    summary = run_sweep(load_grid(grid), folder / "out", LocalExecutor(), echo=lambda line: None)
    assert not summary["failed"], summary
    return folder / "out"


def test_the_release_tables_hold_three_servers_and_the_floor(release_sweep):
    tables = {t.key: t for t in build_tables(release_sweep)}
    assert {"release-top-k", "release-label-only"} <= set(tables)
    table = tables["release-top-k"]
    column = {c.key: i for i, c in enumerate(table.columns)}
    rows = {row[column["arm"]]: row for row in table.rows}
    assert list(rows) == [NO_POLICY, *ARMS]
    assert [row[column["policy"]] for row in rows.values()] == ["none"] + ["top-1"] * 4
    through = open_run(release_sweep / "fashion-mnist-vicious-small__release.k=1__release.policy=topk")
    blind = open_run(release_sweep / "fashion-mnist-vicious-small__release.policy=none")
    x = blind.splits.test.float_images()
    # The first row: the blind pair without any policy, its own metrics.json.
    measured = json.loads((blind.path / "metrics.json").read_text())
    assert rows[NO_POLICY][column["psnr"]].mean == pytest.approx(measured["psnr"], abs=1e-6)
    # (a): the blind pair behind top-1, recomputed here from its networks.
    with torch.no_grad():
        logits = blind.classifier.eval()(x)
        rebuilt = blind.decoder.eval().forward_observed(TopK(1)(logits, "logits"))
    expected = float(psnr_from_mse(((rebuilt - x) ** 2).mean()))
    assert rows["blind (a)"][column["psnr"]].mean == pytest.approx(expected, abs=1e-3)
    assert rows["blind (a)"][column["accuracy"]].mean == pytest.approx(
        float((logits.argmax(1) == blind.splits.test.labels).float().mean()), abs=1e-6)
    # (c): the run trained through top-1, measured behind it.
    _, through_rebuilt = reconstruct(through, through.splits.test.images)
    expected = float(psnr_from_mse(((through_rebuilt - x) ** 2).mean()))
    assert rows["trained through (c)"][column["psnr"]].mean == pytest.approx(expected, abs=1e-3)
    # (b) was computed once and kept beside the blind run.
    cached = blind.path / "release" / "top-1.json"
    stamp = cached.stat().st_mtime_ns
    build_tables(release_sweep)
    assert cached.stat().st_mtime_ns == stamp
    # Top-1 keeps the predicted class: every server sees the same accuracy.
    accuracy = {arm: rows[arm][column["accuracy"]].mean for arm in ARMS}
    assert accuracy["blind (a)"] == accuracy["decoder retrained (b)"]
    assert accuracy["trained through (c)"] == accuracy["label only"]
    assert len(release_points(table)) == 5
    chosen = render(build_tables(release_sweep), "md", sections=["release"])
    assert "## Release policy top-k" in chosen and "## Release policy label-only" in chosen and "## Results" not in chosen


def test_a_purifier_keeps_the_label_against_servers_a_and_b(release_sweep):
    table = {t.key: t for t in build_tables(release_sweep)}["release-purifier"]
    column = {c.key: i for i, c in enumerate(table.columns)}
    blind = open_run(release_sweep / "fashion-mnist-vicious-small__release.policy=none")
    with torch.no_grad():
        predicted = blind.classifier.eval()(blind.splits.test.float_images()).argmax(dim=1)
    kept = float((predicted == blind.splits.test.labels).float().mean())
    assert {row[column["policy"]] for row in table.rows} == {"none", "purifier-0", "purifier-0.1"}
    for row in table.rows:
        assert row[column["arm"]] in (NO_POLICY, "blind (a)", "decoder retrained (b)", "label only")
        assert row[column["accuracy"]].mean == pytest.approx(kept, abs=1e-6)  # the label is kept
    assert (blind.path / "release" / "purifier-0.1.safetensors").is_file()


def test_the_report_shows_a_figure_per_policy_family(release_sweep):
    page = build_report(release_sweep, num_images=2)
    assert 'id="release"' in page
    assert page.count('alt="accuracy against PSNR, Release policy') == 3  # top-k, label-only, purifier
