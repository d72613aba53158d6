"""A sweep's results in the paper's layout: tables of runs aggregated over seeds.

Reads every ``metrics.json`` (with its ``config.yaml``) under a folder, and the
``status.json`` of cells that did not finish. Tables (``SECTIONS``):

* ``summary``: per dataset, K, output form and regime, each measure's mean ± std
  over seeds (sample std, n − 1); a single seed shows its bootstrap 95% interval.
  A ``label only`` row beside each honest one: the label-only floor of the honest
  classifiers (each test image replaced by the mean training image of its predicted class).
* ``paired``: vicious minus honest, paired by dataset, K, output form and seed, and
  vicious minus its own label-only floor.
* ``leakage``: reconstruction measures against K, the number of classes or attributes.
* ``release``: where runs were trained through a release policy (``release.policy``), one
  table per policy family against three servers (``vicious.studies.release_study``).
* ``detection``, ``frontier``: where runs vary an attacker's settings against the detectors
  (``loss.evade_*``, ``loss.beta_ent``, ``model.covert_key``), each run audited, and the
  leakage a server keeps while each detector says likely-honest (``vicious.studies.detection_study``).
* ``runs``: every run with the bootstrap 95% interval of each mean.
* ``failed``: cells without results, and why.

A ``metrics.json`` that is not the evaluation's (a value of the wrong type, a missing
field) is refused in one line naming it. A NaN or infinite measure is legitimate (a
diverged run): it shows as missing, is left out of means, and a note names the run.

Grids that vary other config keys (say ``loss.beta_r``) get one column per such key,
so rows never mix settings. Risk R is shown in both variants (docs/method.md, "Measures"): ``exact``
(full pseudo-inverse, as in the paper) and ``principal`` (the leading principal subspace).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicious.config.regimes import REGIME_NAMES
from vicious.config.schema import OPERATIONAL_KEYS, ConfigError, RunConfig, flatten_config, read_yaml
from vicious.runs.results import METRICS_FILE, read_run_result
from vicious.studies.sweep import (
    STATUS_FILE,
    cell_state,
    format_value,
    is_finished,
    read_status,
)

FORMATS = ("md", "csv", "json", "latex")
SECTIONS = ("summary", "paired", "leakage", "release", "detection", "frontier", "runs", "failed")
LABEL_ONLY = "label only"
REGIMES = (LABEL_ONLY, *REGIME_NAMES)
DATASET_ORDER = ("mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet", "celeba")
# Config keys that name a cell or say where or how it was computed, not what it computed.
_NOT_SETTINGS = ("seed", "regime", "output", "preset", "data.name", "data.attributes", *OPERATIONAL_KEYS,
                 "train.accelerator", "train.devices", "train.num_nodes", "train.strategy", "train.eval_batch_size",
                 "train.compile", "train.channels_last")


@dataclass(frozen=True)
class Stat:
    """A mean over ``n`` values, their sample std (None for n = 1) and, for one run, its 95% interval."""

    mean: float
    std: float | None
    n: int
    ci: tuple[float, float] | None = None

    @classmethod
    def of(cls, values: Sequence[float], ci: tuple[float, float] | None = None) -> Stat:
        values = [float(v) for v in values]
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values), ci if len(values) == 1 else None)


def _psnr_interval(lo: float, hi: float) -> tuple[float, float]:
    # PSNR = 10 log10(1 / MSE) falls as MSE grows, and percentile intervals follow monotone maps.
    return 10 * math.log10(1 / hi), 10 * math.log10(1 / lo)


@dataclass(frozen=True)
class Measure:
    """One number of metrics.json: where it is, how to show it, where its 95% interval is."""

    key: str
    title: str
    path: tuple[str, ...]
    fmt: str
    ci: str | None = None
    ci_map: Callable[[float, float], tuple[float, float]] | None = None

    def value(self, metrics: dict) -> float | None:
        for part in self.path:
            if not isinstance(metrics, dict) or part not in metrics:
                return None
            metrics = metrics[part]
        return float(metrics)

    def finite_value(self, metrics: dict) -> float | None:
        """The value, or None where it is missing, NaN or infinite (a diverged run)."""
        value = self.value(metrics)
        return value if value is not None and math.isfinite(value) else None

    def interval(self, metrics: dict) -> tuple[float, float] | None:
        found = metrics.get("confidence_intervals", {}).get(self.ci) if self.ci else None
        if not found or not all(math.isfinite(v) for v in found):
            return None
        lo, hi = found
        if self.ci_map is _psnr_interval and not 0 < lo <= hi:
            return None  # PSNR of an MSE of 0 is infinite
        return self.ci_map(lo, hi) if self.ci_map else (lo, hi)


ACCURACY = Measure("accuracy", "accuracy", ("accuracy",), "{:.3f}", "accuracy")
MSE = Measure("mse", "MSE", ("mse",), "{:.4f}", "mse")
PSNR = Measure("psnr", "PSNR (dB)", ("psnr",), "{:.2f}", "mse", _psnr_interval)
SSIM = Measure("ssim", "SSIM", ("ssim",), "{:.3f}", "ssim")
R_EXACT = Measure("r_exact", "R exact", ("risk", "exact", "mean"), "{:.3f}", "risk_exact")
R_PRINCIPAL = Measure("r_principal", "R principal", ("risk", "principal", "mean"), "{:.3f}", "risk_principal")
R_ABOVE_ONE = Measure("r_above_one", "r>1 (principal)", ("risk", "principal", "frac_above_one"), "{:.1%}")
REID1_PIXEL = Measure("reid_top1_pixel", "re-id@1 pixel", ("reidentification", "pixel", "top1"), "{:.1%}")
REID1 = Measure("reid_top1", "re-id@1 principal", ("reidentification", "principal", "top1"), "{:.1%}")
REID5 = Measure("reid_top5", "re-id@5 principal", ("reidentification", "principal", "top5"), "{:.1%}")
PSNR_LABEL_ONLY = Measure("psnr_label_only", "PSNR label only (dB)", ("label_only", "psnr"), "{:.2f}")
_ALL_MEASURES = (ACCURACY, MSE, PSNR, SSIM, R_EXACT, R_PRINCIPAL, R_ABOVE_ONE, REID1_PIXEL, REID1, REID5)
SUMMARY_MEASURES = (ACCURACY, MSE, PSNR, SSIM, R_EXACT, R_PRINCIPAL, R_ABOVE_ONE, REID1, REID5)
LEAKAGE_MEASURES = (PSNR, SSIM, R_EXACT, R_PRINCIPAL, REID1)
RUN_MEASURES = (ACCURACY, MSE, PSNR, SSIM, R_EXACT, R_PRINCIPAL, REID1_PIXEL, REID1, REID5)


@dataclass(frozen=True)
class RunRecord:
    """A finished run: where it is, its metrics.json, its flattened config.yaml and the
    measures of metrics.json that are NaN or infinite."""

    name: str
    path: Path
    metrics: dict = field(hash=False)
    config: dict = field(hash=False)
    non_finite: tuple[str, ...] = field(default=(), hash=False)

    @property
    def dataset(self) -> str:
        return self.metrics["dataset"]

    @property
    def num_outputs(self) -> int:
        return int(self.metrics["num_outputs"])

    @property
    def output(self) -> str:
        return self.metrics["output"]

    @property
    def regime(self) -> str:
        return self.metrics["regime"]

    @property
    def seed(self) -> int:
        return int(self.metrics["seed"])


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str | None = None  # for Stat and number cells; None: text


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)


def non_finite_measures(metrics: dict) -> tuple[str, ...]:
    """The table measures of a (validated) metrics record that are NaN or infinite:
    legitimate, a diverged run, and named under the tables."""
    found = []
    for prefix, values in (("", metrics), ("label_only.", metrics.get("label_only") or {})):
        for measure in _ALL_MEASURES:
            value = measure.value(values)
            where = prefix + ".".join(measure.path)
            if value is not None and not math.isfinite(value) and where not in found:
                found.append(where)
    return tuple(found)


def collect_runs(folder: Path) -> tuple[list[RunRecord], list[dict]]:
    """Finished runs under ``folder`` (any depth) and the statuses of cells without results."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}; give the --out of 'vicious sweep'")
    records = []
    defaults = flatten_config(RunConfig().model_dump())
    for path in sorted(folder.rglob(METRICS_FILE)):
        run_dir = path.parent
        config_path = run_dir / "config.yaml"
        metrics, _ = read_run_result(run_dir)
        non_finite = non_finite_measures(metrics)
        config = read_yaml(config_path, "run config") if config_path.is_file() else {}
        if not isinstance(config or {}, dict):
            raise ConfigError(f"{config_path} does not hold a config mapping; re-run that cell, or delete it")
        name = run_dir.relative_to(folder).as_posix()
        # A key a run's config lacks (written before the key existed) is its default, which is
        # what that run did: runs of several versions then share their settings.
        flat = {**defaults, **flatten_config(config)} if config else {}
        records.append(RunRecord(name, run_dir, metrics, flat, non_finite))
    # A cell without results: a sweep cell (its status.json) or a run folder that training left
    # (its config.yaml), killed or failed; its state asks the cell's lock whether it still runs.
    started = {p.parent for name in (STATUS_FILE, "config.yaml") for p in folder.rglob(name)}
    unfinished = [{"cell": d.relative_to(folder).as_posix() or ".", **read_status(d), "state": _unfinished_state(d)}
                  for d in sorted(started) if not is_finished(d)]
    return records, unfinished


def _unfinished_state(run_dir: Path) -> str:
    state = cell_state(run_dir)
    if state != "new":  # no status.json: a run folder of 'vicious train'
        return state
    return "not evaluated" if (run_dir / "classifier.safetensors").is_file() else "interrupted"


def setting_keys(records: Iterable[RunRecord]) -> list[str]:
    """Config keys that vary among runs of the same dataset, K, output form and regime (seed aside)."""
    buckets = defaultdict(list)
    for r in records:
        buckets[(r.dataset, r.num_outputs, r.output, r.regime)].append(r.config)
    keys = set()
    for configs in buckets.values():
        for key in set().union(*configs):
            if not key.startswith(_NOT_SETTINGS) and len({repr(c.get(key)) for c in configs}) > 1:
                keys.add(key)
    return sorted(keys)


def dataset_rank(name: str) -> tuple:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def regime_rank(name: str) -> tuple:
    return (REGIMES.index(name) if name in REGIMES else len(REGIMES), name)


def settings_of(record: RunRecord, keys: Sequence[str]) -> tuple:
    return tuple(format_value(record.config.get(k)) for k in keys)


def _stats(records: Sequence[RunRecord], measures: Sequence[Measure]) -> list[Stat | None]:
    out = []
    for m in measures:
        values = [v for v in (m.finite_value(r.metrics) for r in records) if v is not None]
        ci = m.interval(records[0].metrics) if len(records) == 1 else None
        out.append(Stat.of(values, ci) if values else None)
    return out


def _measure_columns(measures: Sequence[Measure]) -> list[Column]:
    return [Column(m.key, m.title, m.fmt) for m in measures]


def label_only_records(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The label-only floor of each honest run as a record of its own (regime ``label only``):
    the measures of ``metrics.json``'s ``label_only`` with that run's accuracy."""
    floors = []
    for r in records:
        if r.regime == "honest" and isinstance(r.metrics.get("label_only"), dict):
            kept = {k: r.metrics[k] for k in ("dataset", "num_outputs", "output", "seed", "accuracy")
                    if k in r.metrics}
            floors.append(dataclasses.replace(r, metrics={**r.metrics["label_only"], **kept, "regime": LABEL_ONLY}))
    return floors


def summary_table(records: Sequence[RunRecord], keys: Sequence[str]) -> Table:
    groups = defaultdict(list)
    for r in [*records, *label_only_records(records)]:
        groups[(r.dataset, r.num_outputs, r.output, settings_of(r, keys), r.regime)].append(r)
    order = sorted(groups, key=lambda g: (dataset_rank(g[0]), g[1], g[2], g[3], regime_rank(g[4])))
    rows = [[d, k, o, *s, regime, len(groups[(d, k, o, s, regime)]),
             *_stats(groups[(d, k, o, s, regime)], SUMMARY_MEASURES)] for d, k, o, s, regime in order]
    columns = [Column("dataset", "dataset"), Column("K", "K"), Column("output", "output"),
               *(Column(k, k) for k in keys), Column("regime", "regime"), Column("seeds", "seeds"),
               *_measure_columns(SUMMARY_MEASURES)]
    notes = ["Mean ± sample std over seeds; one seed shows its bootstrap 95% interval [low, high]. "
             "R exact uses the full pseudo-inverse of the pixel covariance (the paper's R); R principal "
             "the leading principal subspace (docs/method.md, 'Measures'). r>1: share of test images reconstructed closer "
             "than the population mean. re-id@k: share of reconstructions whose source is among the k "
             "nearest test images (principal subspace). label only: each test image replaced by the mean "
             "training image of the class the honest classifier predicted, the floor any classifier gives away."]
    return Table("summary", "Results per dataset, output form and regime", columns, rows, notes)


def _honest_partner(vicious: RunRecord, honest: Sequence[RunRecord], keys: Sequence[str]) -> RunRecord | None:
    candidates = [h for h in honest if (h.dataset, h.num_outputs, h.output, h.seed)
                  == (vicious.dataset, vicious.num_outputs, vicious.output, vicious.seed)]
    # Where the honest candidates differ in a setting (e.g. epochs), the vicious run's value decides.
    for key in keys:
        if len({format_value(h.config.get(key)) for h in candidates}) > 1:
            candidates = [h for h in candidates if h.config.get(key) == vicious.config.get(key)]
    return candidates[0] if len(candidates) == 1 else None


def paired_table(records: Sequence[RunRecord], keys: Sequence[str]) -> Table:
    honest = [r for r in records if r.regime == "honest"]
    groups = defaultdict(list)
    for v in (r for r in records if r.regime == "vicious"):
        h = _honest_partner(v, honest, keys)
        if h is not None:
            groups[(v.dataset, v.num_outputs, v.output, settings_of(v, keys))].append((h, v))

    def delta(measure: Measure, pairs, ratio: bool = False) -> Stat | None:
        values = []
        for h, v in pairs:
            a, b = measure.finite_value(h.metrics), measure.finite_value(v.metrics)
            if a is not None and b is not None and not (ratio and a == 0):
                values.append(b / a if ratio else b - a)
        return Stat.of(values) if values else None

    def above_floor(pairs) -> Stat | None:
        values = [a - b for a, b in ((PSNR.finite_value(v.metrics), PSNR_LABEL_ONLY.finite_value(v.metrics))
                                     for _, v in pairs) if a is not None and b is not None]
        return Stat.of(values) if values else None

    def accuracies(runs) -> Stat | None:
        values = [a for a in (ACCURACY.finite_value(r.metrics) for r in runs) if a is not None]
        return Stat.of(values) if values else None

    columns = [Column("dataset", "dataset"), Column("K", "K"), Column("output", "output"),
               *(Column(k, k) for k in keys), Column("pairs", "pairs"),
               Column("accuracy_honest", "accuracy honest", "{:.3f}"),
               Column("accuracy_vicious", "accuracy vicious", "{:.3f}"),
               Column("d_accuracy", "Δ accuracy", "{:+.3f}"), Column("d_psnr", "Δ PSNR (dB)", "{:+.2f}"),
               Column("d_ssim", "Δ SSIM", "{:+.3f}"),
               Column("d_psnr_label_only", "Δ PSNR vs label only (dB)", "{:+.2f}"), Column("x_r_principal", "R principal ×", "{:.2f}"),
               Column("x_r_exact", "R exact ×", "{:.2f}"), Column("d_reid_top1", "Δ re-id@1", "{:+.1%}")]
    order = sorted(groups, key=lambda g: (dataset_rank(g[0]), g[1], g[2], g[3]))
    rows = []
    for group in order:
        pairs = groups[group]
        acc_h = accuracies(h for h, _ in pairs)
        acc_v = accuracies(v for _, v in pairs)
        rows.append([*group[:3], *group[3], len(pairs), acc_h, acc_v, delta(ACCURACY, pairs), delta(PSNR, pairs),
                     delta(SSIM, pairs), above_floor(pairs), delta(R_PRINCIPAL, pairs, ratio=True), delta(R_EXACT, pairs, ratio=True),
                     delta(REID1, pairs)])
    notes = ["Vicious minus honest, paired by dataset, K, output form and seed (× columns: vicious / honest); "
             "Δ PSNR vs label only: vicious minus the label-only floor of its own classifier; "
             "mean ± sample std over pairs. The paper's claims: Δ accuracy near 0, reconstructions far better "
             "(Δ PSNR, Δ SSIM > 0, R × > 1)."]
    if not rows:
        notes.append("No pairs: the runs hold no honest and vicious runs sharing dataset, output form and seed.")
    return Table("paired", "Vicious against honest", columns, rows, notes)


def leakage_table(records: Sequence[RunRecord], keys: Sequence[str]) -> Table:
    groups = defaultdict(list)
    for r in records:
        if r.regime in ("honest", "vicious"):
            groups[(r.regime, r.output, r.num_outputs, r.dataset, settings_of(r, keys))].append(r)
    order = sorted(groups, key=lambda g: (regime_rank(g[0]), g[1], g[4], g[2], dataset_rank(g[3])))
    rows = [[*g[:4], *g[4], len(groups[g]), *_stats(groups[g], LEAKAGE_MEASURES)] for g in order]
    columns = [Column("regime", "regime"), Column("output", "output"), Column("K", "K"), Column("dataset", "dataset"),
               *(Column(k, k) for k in keys), Column("seeds", "seeds"), *_measure_columns(LEAKAGE_MEASURES)]
    ks = sorted({r.num_outputs for r in records})
    notes = ["Leakage against K, the number of classes or attributes (mean ± std over seeds)."]
    if len(ks) == 1:
        notes.append(f"All runs have K = {ks[0]}; a curve against K needs datasets or CelebA attribute sets "
                     "with other K (see grids/paper.yaml).")
    return Table("leakage", "Leakage against the number of classes or attributes", columns, rows, notes)


def runs_table(records: Sequence[RunRecord]) -> Table:
    order = sorted(records, key=lambda r: (dataset_rank(r.dataset), r.num_outputs, r.output,
                                           regime_rank(r.regime), r.seed, r.name))
    rows = [[r.name, r.dataset, r.num_outputs, r.output, r.regime, r.seed, *_stats([r], RUN_MEASURES)] for r in order]
    columns = [Column("run", "run"), Column("dataset", "dataset"), Column("K", "K"), Column("output", "output"),
               Column("regime", "regime"), Column("seed", "seed"), *_measure_columns(RUN_MEASURES)]
    notes = ["Each run on its test split, with the percentile-bootstrap 95% interval of each mean (1000 "
             "resamples of the test images; PSNR's from the MSE's). re-id@1 pixel ranks in pixel space."]
    return Table("runs", "Every run, with 95% confidence intervals", columns, rows, notes)


_UNFINISHED_HINT = {
    "running": "still training (its folder is locked by a live process)",
    "not evaluated": "trained without evaluation; run 'vicious evaluate' on it",
    "interrupted": "interrupted (no error recorded); rerun the sweep (or 'vicious train --resume') to resume it",
}


def failed_table(unfinished: Sequence[dict]) -> Table:
    rows = [[s["cell"], s.get("state", "unknown"), s.get("attempt", ""),
             (s.get("error") or _UNFINISHED_HINT.get(s.get("state"), _UNFINISHED_HINT["interrupted"])).splitlines()[0]]
            for s in unfinished]
    columns = [Column("cell", "cell"), Column("state", "state"), Column("attempt", "attempt"), Column("error", "error")]
    notes = ["Each cell's status.json holds the full traceback; rerunning the sweep retries these cells."]
    return Table("failed", "Cells without results", columns, rows, notes if rows else ["None."])


def build_tables(folder: Path) -> list[Table]:
    """Every table of ``SECTIONS`` for the runs under ``folder``."""
    records, unfinished = collect_runs(folder)
    if not records and not unfinished:
        raise ValueError(f"no runs under {folder} (no */metrics.json); run 'vicious sweep GRID --out {folder}' first")
    return tables_for(records, unfinished)


def non_finite_note(records: Sequence[RunRecord]) -> str | None:
    """A note naming the runs whose metrics.json holds NaN or infinite measures, or None."""
    odd = [r for r in records if r.non_finite]
    if not odd:
        return None
    named = "; ".join(f"{r.name} ({', '.join(r.non_finite[:3])}{', ...' if len(r.non_finite) > 3 else ''})"
                      for r in odd[:3])
    more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
    return (f"{len(odd)} run{'s' if len(odd) > 1 else ''} hold NaN or infinite measures, shown as – and left "
            f"out of means (a diverged run? retrain it): {named}{more}.")


def tables_for(records: Sequence[RunRecord], unfinished: Sequence[dict] = ()) -> list[Table]:
    # These build on this module's tables.
    from vicious.studies.detection_study import detection_tables
    from vicious.studies.release_study import release_tables

    keys = setting_keys(records)
    tables = [summary_table(records, keys), paired_table(records, keys), leakage_table(records, keys),
              *release_tables(records, keys), *detection_tables(records, keys), runs_table(records)]
    note = non_finite_note(records)
    for table in tables if note else ():
        table.notes.append(note)
    return [*tables, failed_table(unfinished)]


# --- rendering -------------------------------------------------------------------------------


def format_cell(value: Any, fmt: str | None, *, pm: str = "±") -> str:
    """A cell as text: a Stat as ``mean ± std`` (n > 1), ``mean [low, high]`` (one run) or ``mean``."""
    if value is None:
        return "–"
    if isinstance(value, Stat):
        plain = fmt.replace("+", "")  # a sign belongs to the mean, not to its spread
        text = fmt.format(value.mean)
        if value.std is not None:
            return f"{text} {pm} {plain.format(value.std)}"
        if value.ci is not None:
            return f"{text} [{plain.format(value.ci[0])}, {plain.format(value.ci[1])}]"
        return text
    if isinstance(value, float) and fmt:
        return fmt.format(value)
    return str(value)


def _select(tables: Sequence[Table], sections: Sequence[str]) -> list[Table]:
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown table section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    return [t for t in tables if t.key.split("-")[0] in sections]  # release-<family> belongs to release


def to_markdown(tables: Sequence[Table]) -> str:
    parts = []
    for t in tables:
        lines = [f"## {t.title}", ""]
        if not t.rows:
            parts.append("\n".join(lines + [f"{n}\n" for n in t.notes]))
            continue
        lines.append("| " + " | ".join(c.title for c in t.columns) + " |")
        lines.append("|" + "|".join("---:" if c.fmt else "---" for c in t.columns) + "|")
        for row in t.rows:
            cells = (format_cell(v, c.fmt).replace("|", "\\|") for v, c in zip(row, t.columns))
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines + [""] + [f"{n}\n" for n in t.notes]))
    return "\n".join(parts)


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _latex(text: str) -> str:
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("×", r"$\times$").replace("–", "--")


def to_latex(tables: Sequence[Table]) -> str:
    """One ``table`` environment per table (needs ``\\usepackage{booktabs}``)."""
    parts = []
    for t in tables:
        spec = "".join("r" if c.fmt else "l" for c in t.columns)
        body = [" & ".join(_latex(format_cell(v, c.fmt)) for v, c in zip(row, t.columns)) + r" \\" for row in t.rows]
        parts.append("\n".join([
            r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{_latex(t.title)}}}",
            f"\\label{{tab:vicious-{t.key}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(_latex(c.title) for c in t.columns) + r" \\", r"\midrule", *body, r"\bottomrule",
            r"\end{tabular}", *(f"% {n}" for n in t.notes), r"\end{table}", ""]))
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, Stat):
        return {"mean": value.mean, "std": value.std, "n": value.n, "ci95": list(value.ci) if value.ci else None}
    return value


def to_json(tables: Sequence[Table]) -> str:
    return json.dumps({"tables": [
        {"key": t.key, "title": t.title, "columns": [{"key": c.key, "title": c.title} for c in t.columns],
         "rows": [{c.key: _plain(v) for c, v in zip(t.columns, row)} for row in t.rows], "notes": t.notes}
        for t in tables]}, indent=2) + "\n"


def to_csv(table: Table) -> str:
    """One table, numbers unformatted; a Stat column ``x`` becomes x_mean, x_std, x_n, x_ci_low, x_ci_high."""
    stat_columns = {i for i in range(len(table.columns)) if any(isinstance(row[i], Stat) for row in table.rows)}
    header = []
    for i, c in enumerate(table.columns):
        header += [f"{c.key}_{s}" for s in ("mean", "std", "n", "ci_low", "ci_high")] if i in stat_columns else [c.key]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        cells = []
        for i, v in enumerate(row):
            if i in stat_columns:
                cells += [v.mean, v.std, v.n, *(v.ci or (None, None))] if isinstance(v, Stat) else [None] * 5
            else:
                cells.append(v)
        writer.writerow(["" if v is None else v for v in cells])
    return out.getvalue()


def render(tables: Sequence[Table], fmt: str, *, sections: Sequence[str] = SECTIONS) -> str:
    """Tables as text in ``fmt`` (``FORMATS``); csv holds the first selected section only."""
    chosen = _select(tables, sections)
    if fmt == "md":
        return to_markdown(chosen)
    if fmt == "latex":
        return to_latex(chosen)
    if fmt == "json":
        return to_json(chosen)
    if fmt == "csv":
        return to_csv(chosen[0]) if chosen else ""
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
