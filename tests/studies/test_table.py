"""Tables of a sweep, checked against statistics computed here from the runs' numbers."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import pytest
from sweep_helpers import fake_run

from vicious.cli import main
from vicious.studies.table import Stat, build_tables, format_cell, render

# (regime, seed) -> accuracy, mse, ssim, r_exact, r_principal
NUMBERS = {
    ("honest", 1): (0.90, 0.030, 0.50, 0.80, 1.10),
    ("honest", 2): (0.88, 0.034, 0.46, 0.84, 1.06),
    ("honest", 3): (0.91, 0.028, 0.52, 0.78, 1.14),
    ("vicious", 1): (0.89, 0.015, 0.70, 0.95, 1.60),
    ("vicious", 2): (0.87, 0.017, 0.66, 0.91, 1.50),
    ("vicious", 3): (0.90, 0.014, 0.72, 0.97, 1.70),
}


@pytest.fixture
def sweep(tmp_path):
    for (regime, seed), (acc, mse, ssim, rx, rp) in NUMBERS.items():
        fake_run(tmp_path, f"fm-{regime}-{seed}", regime=regime, seed=seed, accuracy=acc, mse=mse, ssim=ssim,
                 r_exact=rx, r_principal=rp)
    # CelebA at two K, one seed each: the leakage table orders by K.
    for k, rp in ((40, 2.5), (1, 1.2)):
        fake_run(tmp_path, f"celeba-k{k}-vicious", regime="vicious", seed=1, dataset="celeba", k=k, accuracy=0.8,
                 mse=0.02, ssim=0.6, r_exact=0.9, r_principal=rp)
    failed = tmp_path / "broken-cell"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"state": "failed", "attempt": 2,
                                                    "error": "RuntimeError: out of memory\nmore", "traceback": "..."}))
    return tmp_path


def _tables(folder):
    return {t.key: t for t in build_tables(folder)}


def _row(table, **match):
    keys = [c.key for c in table.columns]
    rows = [r for r in table.rows if all(r[keys.index(k)] == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return dict(zip(keys, rows[0]))


def test_summary_is_mean_and_sample_std_over_seeds(sweep):
    summary = _tables(sweep)["summary"]
    for regime in ("honest", "vicious"):
        row = _row(summary, dataset="fashion-mnist", regime=regime)
        assert row["seeds"] == 3 and row["K"] == 10 and row["output"] == "raw"
        for i, key in enumerate(("accuracy", "mse", "ssim", "r_exact", "r_principal")):
            values = [NUMBERS[(regime, s)][i] for s in (1, 2, 3)]
            assert row[key].mean == pytest.approx(sum(values) / 3)
            assert row[key].std == pytest.approx(statistics.stdev(values))
            assert row[key].ci is None  # several seeds: the spread over seeds, not one run's interval
        psnrs = [10 * math.log10(1 / NUMBERS[(regime, s)][1]) for s in (1, 2, 3)]
        assert row["psnr"].mean == pytest.approx(sum(psnrs) / 3)
    # Paper order: Fashion-MNIST before CelebA; honest before vicious.
    datasets = [r[0] for r in summary.rows]
    assert datasets.index("fashion-mnist") < datasets.index("celeba")


def test_label_only_rows_are_the_honest_runs_floor_and_pairs_measure_above_it(sweep):
    tables = _tables(sweep)
    row = _row(tables["summary"], dataset="fashion-mnist", regime="label only")
    honest = [NUMBERS[("honest", s)] for s in (1, 2, 3)]
    assert row["seeds"] == 3
    assert row["accuracy"].mean == pytest.approx(statistics.fmean(h[0] for h in honest))
    assert row["psnr"].mean == pytest.approx(statistics.fmean(-10 * math.log10(2 * h[1]) for h in honest))
    assert row["ssim"].mean == pytest.approx(statistics.fmean(h[2] / 2 for h in honest))
    at = [c.key for c in tables["summary"].columns].index("regime")
    regimes = [r[at] for r in tables["summary"].rows if r[0] == "fashion-mnist"]
    assert regimes == ["label only", "honest", "vicious"]
    paired = _row(tables["paired"], dataset="fashion-mnist")
    assert paired["d_psnr_label_only"].mean == pytest.approx(10 * math.log10(2))


def test_one_seed_shows_its_bootstrap_interval_and_psnr_maps_the_mse_interval(sweep):
    row = _row(_tables(sweep)["summary"], dataset="celeba", K=40)
    assert row["seeds"] == 1 and row["accuracy"].std is None
    assert row["accuracy"].ci == pytest.approx((0.79, 0.82))
    # PSNR falls as MSE rises: the interval's ends swap.
    assert row["psnr"].ci == pytest.approx((10 * math.log10(1 / 0.022), 10 * math.log10(1 / 0.018)))
    assert format_cell(row["accuracy"], "{:.3f}") == "0.800 [0.790, 0.820]"


def test_paired_table_is_vicious_minus_honest_by_seed(sweep):
    row = _row(_tables(sweep)["paired"], dataset="fashion-mnist")
    assert row["pairs"] == 3
    d_acc = [NUMBERS[("vicious", s)][0] - NUMBERS[("honest", s)][0] for s in (1, 2, 3)]
    ratio = [NUMBERS[("vicious", s)][4] / NUMBERS[("honest", s)][4] for s in (1, 2, 3)]
    assert row["d_accuracy"].mean == pytest.approx(sum(d_acc) / 3)
    assert row["d_accuracy"].std == pytest.approx(statistics.stdev(d_acc))
    assert row["x_r_principal"].mean == pytest.approx(sum(ratio) / 3)
    d_psnr = [10 * math.log10(NUMBERS[("honest", s)][1] / NUMBERS[("vicious", s)][1]) for s in (1, 2, 3)]
    assert row["d_psnr"].mean == pytest.approx(sum(d_psnr) / 3)
    # CelebA has no honest runs: nothing to pair.
    assert all(r[0] != "celeba" for r in _tables(sweep)["paired"].rows)


def test_leakage_rows_follow_k_and_failed_cells_are_listed(sweep):
    tables = _tables(sweep)
    vicious_celeba = [r for r in tables["leakage"].rows if r[0] == "vicious" and r[3] == "celeba"]
    assert [r[2] for r in vicious_celeba] == [1, 40]
    assert not any("All runs have K" in n for n in tables["leakage"].notes)
    failed = tables["failed"]
    assert failed.rows == [["broken-cell", "failed", 2, "RuntimeError: out of memory"]]
    assert len(tables["runs"].rows) == len(NUMBERS) + 2


def test_a_varied_setting_becomes_a_column_and_pairs_match_it(tmp_path):
    for epochs in (1, 2):
        for regime, rp in (("honest", 1.0), ("vicious", 1.5 * epochs)):
            fake_run(tmp_path, f"{regime}-e{epochs}", regime=regime, seed=1, accuracy=0.9, mse=0.02, ssim=0.5,
                     r_exact=0.9, r_principal=rp, overrides={"train.epochs": epochs})
    tables = _tables(tmp_path)
    assert "train.epochs" in [c.key for c in tables["summary"].columns]
    paired = tables["paired"]
    assert _row(paired, **{"train.epochs": "1"})["x_r_principal"].mean == pytest.approx(1.5)
    assert _row(paired, **{"train.epochs": "2"})["x_r_principal"].mean == pytest.approx(3.0)
    assert any("All runs have K = 10" in n for n in tables["leakage"].notes)


def test_formats(sweep):
    tables = build_tables(sweep)
    md = render(tables, "md")
    assert md.count("\n## ") + md.startswith("## ") == 5 and "0.897 ± 0.015" in md  # honest accuracy
    rows = list(csv.DictReader(io.StringIO(render(tables, "csv", sections=["summary"]))))
    honest = next(r for r in rows if r["dataset"] == "fashion-mnist" and r["regime"] == "honest")
    assert float(honest["accuracy_mean"]) == pytest.approx(0.89666666) and honest["accuracy_ci_low"] == ""
    data = json.loads(render(tables, "json", sections=["paired"]))
    assert [t["key"] for t in data["tables"]] == ["paired"]
    assert data["tables"][0]["rows"][0]["d_accuracy"]["n"] == 3
    latex = render(tables, "latex", sections=["summary", "runs"])
    assert latex.count(r"\begin{tabular}") == 2 and r"$\pm$" in latex and r"\_" not in latex.split("tabular")[0]
    assert r"r>1 (principal)" in latex and r"\%" in latex


def test_format_cell():
    assert format_cell(Stat(0.5, 0.25, 3), "{:+.2f}") == "+0.50 ± 0.25"
    assert format_cell(Stat(0.5, None, 1, (0.4, 0.6)), "{:.1%}") == "50.0% [40.0%, 60.0%]"
    assert format_cell(None, "{:.1f}") == "–" and format_cell(7, None) == "7"


def test_cli(sweep, tmp_path, capsys):
    assert main(["table", str(sweep), "--format", "csv", "--section", "leakage"]) == 0
    assert capsys.readouterr().out.startswith("regime,output,K,dataset,seeds,psnr_mean")
    out = tmp_path / "t.tex"
    assert main(["table", str(sweep), "--format", "latex", "-o", str(out)]) == 0
    assert out.read_text().startswith(r"\begin{table}")
    assert main(["table", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["table", str(sweep), "--format", "xlsx"]) == 2
    assert "unknown format 'xlsx'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no runs under" in capsys.readouterr().err


def test_run_folders_without_results_are_listed_with_their_state(tmp_path):
    # Two 'vicious train' folders without metrics.json and without a sweep's status.json: one
    # killed before its weights were written, one trained with --no-evaluate.
    from vicious.studies.table import collect_runs

    killed, unevaluated = tmp_path / "killed", tmp_path / "trained"
    for run in (killed, unevaluated):
        run.mkdir()
        (run / "config.yaml").write_text("regime: vicious\n")
    (unevaluated / "classifier.safetensors").write_bytes(b"")
    records, unfinished = collect_runs(tmp_path)
    assert records == []
    assert {u["cell"]: u["state"] for u in unfinished} == {"killed": "interrupted", "trained": "not evaluated"}


def test_runs_of_an_older_version_share_the_settings_of_newer_ones(tmp_path):
    """A config written before a key existed (no release section) has that key's default: the
    two seeds below are one group, not two of different settings."""
    import yaml

    from vicious.studies.table import collect_runs, setting_keys

    old = fake_run(tmp_path, "old", regime="vicious", seed=1, accuracy=0.8, mse=0.02, ssim=0.5, r_exact=1.0,
                   r_principal=1.2)
    fake_run(tmp_path, "new", regime="vicious", seed=2, accuracy=0.8, mse=0.02, ssim=0.5, r_exact=1.0, r_principal=1.2)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["release"]
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    records, _ = collect_runs(tmp_path)
    assert setting_keys(records) == []
    assert {r.config["release.policy"] for r in records} == {"none"}
