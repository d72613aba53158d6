"""``vicious report``: one self-contained HTML page of a sweep (every image embedded).

Sections: the tables of ``vicious.studies.table``; accuracy against risk across the
grid; leakage against K; per-image r histograms, honest vs vicious; reconstruction
grids per seed (originals, then each regime's reconstructions); the test images the
vicious decoder rebuilds best and worst; and each run's config. Reconstructions are
recomputed from the saved weights (the first ``num_images`` test images).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from vicious.figures import (
    accuracy_risk_scatter,
    leakage_curves,
    png_img,
    reconstruction_grid,
    release_policy_curves,
    risk_histograms,
    training_curves,
)
from vicious.pages import html_page
from vicious.runs.files import atomic_write_text, read_json
from vicious.runs.loggers import read_training_log
from vicious.studies.release_study import release_points
from vicious.studies.sweep import GRID_COPY, SWEEP_FILE, read_status
from vicious.studies.table import (
    R_EXACT,
    R_PRINCIPAL,
    SSIM,
    RunRecord,
    Stat,
    Table,
    collect_runs,
    dataset_rank,
    format_cell,
    regime_rank,
    setting_keys,
    settings_of,
    tables_for,
)

# The report's rules, after the shared ones of vicious.pages.
STYLE = """
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.4rem; border-bottom: 2px solid #eee; padding-bottom: .2rem; }
h3 { margin: 1.4rem 0 .4rem; font-size: 1.02rem; }
.scroll { overflow-x: auto; margin: .6rem 0; }
table { margin: 0; font-size: .85rem; }
th, td { padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; }
tr.honest td.regime { color: #1f77b4; } tr.vicious td.regime { color: #d62728; font-weight: 600; }
.note { font-size: .88rem; max-width: 60rem; }
figure { margin: .8rem 0 1.4rem; } figcaption { color: #555; font-size: .85rem; }
details { margin: .3rem 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; font-size: .8rem; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; }
"""


def _esc(text) -> str:
    return html.escape(str(text))


def table_html(table: Table) -> str:
    """A Table as an HTML table (with its notes); rows carry their regime as a class."""
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in table.notes)
    if not table.rows:
        return f'<h3 id="{table.key}">{_esc(table.title)}</h3>{notes}'
    regime_at = next((i for i, c in enumerate(table.columns) if c.key == "regime"), None)
    head = "".join(f'<th class="{"num" if c.fmt else "text"}">{_esc(c.title)}</th>' for c in table.columns)
    body = []
    for row in table.rows:
        klass = f' class="{_esc(row[regime_at])}"' if regime_at is not None else ""
        cells = "".join(f'<td class="{"num" if c.fmt else "text"} {_esc(c.key)}">{_esc(format_cell(v, c.fmt))}</td>'
                        for v, c in zip(row, table.columns))
        body.append(f"<tr{klass}>{cells}</tr>")
    return (f'<h3 id="{table.key}">{_esc(table.title)}</h3><div class="scroll"><table class="results" '
            f'data-table="{table.key}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            f"{notes}")


def _per_sample(record: RunRecord) -> dict[str, list[float]]:
    path = record.path / "per_sample.csv"
    if not path.is_file():
        return {"exact": [], "principal": []}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {"exact": [float(r["r_exact"]) for r in rows], "principal": [float(r["r_principal"]) for r in rows]}


class _Reconstructor:
    """Opens runs and reconstructs chosen test images, reusing the last few opened runs (a
    group's grids ask for the same runs three times) and loaded test splits."""

    def __init__(self, keep: int = 4) -> None:
        self._splits: OrderedDict[str, object] = OrderedDict()
        self._runs: OrderedDict[Path, object] = OrderedDict()
        self.keep = keep

    def __call__(self, record: RunRecord, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        from vicious.runs.evaluation import reconstruct

        run = self._open(record)
        images = run.splits.test.images[torch.as_tensor(list(indices), dtype=torch.long)]
        _, x_rec = reconstruct(run, images)
        return images.float() / 255, x_rec

    def _open(self, record: RunRecord):
        from vicious.config.schema import load_config
        from vicious.runs.layout import load_splits, open_run

        if record.path not in self._runs:
            config = load_config(record.path / "config.yaml")
            key = json.dumps([config.data.model_dump(), config.seed], sort_keys=True)
            if key not in self._splits:
                splits = load_splits(config)
                # Only the test images are shown: drop the training images (CelebA's are 0.5 GB per K).
                self._splits[key] = dataclasses.replace(splits, train=splits.train.subset(1, 0),
                                                        val=splits.val.subset(1, 0))
                if len(self._splits) > self.keep:
                    self._splits.popitem(last=False)
            self._splits.move_to_end(key)
            self._runs[record.path] = open_run(record.path, self._splits[key])
            if len(self._runs) > 2 * self.keep:
                self._runs.popitem(last=False)
        self._runs.move_to_end(record.path)
        return self._runs[record.path]


def _group_label(dataset: str, k: int, output: str, settings: dict) -> str:
    extra = ", ".join(f"{key}={value}" for key, value in settings.items())
    return f"{dataset} (K={k}), {output} outputs" + (f", {extra}" if extra else "")


def _figures_section(records: Sequence[RunRecord], keys: Sequence[str]) -> str:
    points = [{"accuracy": r.metrics["accuracy"], "r_principal": R_PRINCIPAL.value(r.metrics),
               "r_exact": R_EXACT.value(r.metrics), "regime": r.regime, "output": r.output} for r in records]
    scatter = png_img(accuracy_risk_scatter(points), "accuracy against reconstruction risk, one marker per run")
    groups = defaultdict(list)
    for r in records:
        if r.regime in ("honest", "vicious", "autoencoder"):
            groups[(r.regime, r.output, r.dataset, r.num_outputs, settings_of(r, keys))].append(r)
    curve_points = []
    for (regime, output, dataset, k, _), runs in groups.items():
        r_stat = Stat.of([R_PRINCIPAL.value(r.metrics) for r in runs])
        s_stat = Stat.of([SSIM.value(r.metrics) for r in runs])
        curve_points.append({"K": k, "regime": regime, "output": output, "dataset": dataset, "r_principal": r_stat.mean,
                             "r_principal_std": r_stat.std, "ssim": s_stat.mean, "ssim_std": s_stat.std})
    curves = png_img(leakage_curves(curve_points), "R principal and SSIM against the number of outputs K")
    return (f'<h2 id="scatter">Accuracy against risk</h2><figure>{scatter}<figcaption>One marker per run '
            "(colour: regime; circle raw, triangle softmax outputs). Right of the dotted line the average "
            "reconstruction is closer to the user's image than the population mean is. The paper's claim: a "
            "vicious classifier sits at honest accuracy, with far higher risk.</figcaption></figure>"
            f'<h2 id="leakage-curves">Leakage against K</h2><figure>{curves}<figcaption>Mean ± std over seeds, '
            "per dataset and K (the number of classes or attributes).</figcaption></figure>")


def _histograms_section(records: Sequence[RunRecord], keys: Sequence[str]) -> str:
    groups = defaultdict(lambda: defaultdict(lambda: {"exact": [], "principal": []}))
    for r in records:
        samples = _per_sample(r)
        target = groups[(r.dataset, r.num_outputs, r.output, settings_of(r, keys))][r.regime]
        for variant in ("exact", "principal"):
            target[variant] += samples[variant]
    parts = ['<h2 id="histograms">Per-image risk r, honest vs vicious</h2><p class="note">Test images of all '
             "seeds pooled; r &gt; 1 (right of the dotted line) means the reconstruction is closer to the image "
             "than the population mean is.</p>"]
    for group in sorted(groups, key=lambda g: (dataset_rank(g[0]), g[1], g[2], g[3])):
        ordered = sorted(groups[group].items(), key=lambda kv: regime_rank(kv[0]))
        # Runs evaluated before per_sample.csv existed have no per-image values.
        by_regime = {regime: samples for regime, samples in ordered if samples["principal"]}
        if not by_regime:
            continue
        label = _group_label(*group[:3], dict(zip(keys, group[3])))
        parts.append(f"<h3>{_esc(label)}</h3><figure>"
                     f"{png_img(risk_histograms(by_regime), f'histograms of per-image r, {label}')}</figure>")
    return "".join(parts)


def _training_section(records: Sequence[RunRecord], keys: Sequence[str]) -> str:
    """Training and validation curves of every run, from its CSV logs, one figure per group."""
    groups = defaultdict(dict)
    for r in sorted(records, key=lambda r: (regime_rank(r.regime), r.name)):
        phases = sorted(p.name for p in (r.path / "logs").glob("*") if any(p.glob("version_*/metrics.csv")))
        for phase in phases:
            log = read_training_log(r.path, phase)
            if log.epochs or log.steps:
                seed = r.config.get("seed")
                groups[(r.dataset, r.num_outputs, r.output, settings_of(r, keys))][f"{r.regime} seed {seed} · {phase}"] = log
    parts = ['<h2 id="training">Training curves</h2><p class="note">Per run and phase, from its CSV log: the '
             "training loss every few steps (log scale), then validation PSNR and accuracy per epoch. Blue: honest, "
             "red: vicious, green: autoencoder; dashed: a classifier trained alone.</p>"]
    for group in sorted(groups, key=lambda g: (dataset_rank(g[0]), g[1], g[2], g[3])):
        label = _group_label(*group[:3], dict(zip(keys, group[3])))
        parts.append(f"<h3>{_esc(label)}</h3><figure>"
                     f"{png_img(training_curves(groups[group]), f'training curves, {label}')}</figure>")
    return "".join(parts) if groups else ""


def _reconstruction_sections(records: Sequence[RunRecord], keys: Sequence[str], num_images: int) -> str:
    reconstructor = _Reconstructor()
    by_seed = defaultdict(list)
    for r in records:
        by_seed[(r.dataset, r.num_outputs, r.output, settings_of(r, keys), r.seed)].append(r)
    order = sorted(by_seed, key=lambda g: (dataset_rank(g[0]), g[1], g[2], g[3], g[4]))

    def grid(runs: Sequence[RunRecord], indices: Sequence[int]) -> tuple[str, list[str]]:
        rows, problems = [], []
        for run in sorted(runs, key=lambda r: regime_rank(r.regime)):
            try:
                originals, x_rec = reconstructor(run, indices)
            except (OSError, ValueError) as err:  # ConfigError is a ValueError
                problems.append(f"{run.name}: {err}")
                continue
            if not rows:
                rows.append(("original", originals))
            rows.append((run.regime, x_rec))
        return (png_img(reconstruction_grid(rows), "rows: originals, then each regime's reconstructions", pixels=True)
                if rows else ""), problems

    grids = ['<h2 id="reconstructions">Reconstructions</h2><p class="note">The first test images of each '
             "run's test split; rows: the originals, then what each regime's server rebuilds from the "
             "classifier's outputs alone.</p>"]
    extremes = ['<h2 id="extremes">Best and worst reconstructed test images</h2><p class="note">Ranked by the '
                "per-image r (principal) of the vicious run with the lowest seed; the same images from the "
                "other regimes below them.</p>"]
    shown_extremes = set()
    for group in order:
        runs = by_seed[group]
        label = _group_label(*group[:3], dict(zip(keys, group[3]))) + f", seed {group[4]}"
        first = list(range(min(num_images, runs[0].metrics.get("num_test_images", num_images))))
        image, problems = grid(runs, first)
        grids.append(f"<h3>{_esc(label)}</h3><figure>{image}"
                     + "".join(f'<p class="note">not shown: {_esc(p)}</p>' for p in problems) + "</figure>")
        if group[:4] in shown_extremes:
            continue
        reference = next((r for r in runs if r.regime == "vicious"), None)
        r_values = _per_sample(reference)["principal"] if reference else []
        if not r_values:
            continue
        shown_extremes.add(group[:4])
        ranked = sorted(range(len(r_values)), key=lambda i: r_values[i])
        n = min(num_images, len(ranked) // 2 or 1)
        for title, indices in (("best", ranked[::-1][:n]), ("worst", ranked[:n])):
            image, _ = grid(runs, indices)
            span = f"r from {r_values[indices[0]]:.2f} to {r_values[indices[-1]]:.2f}"
            extremes.append(f"<h3>{_esc(label)}: {title} {n} ({span})</h3><figure>{image}</figure>")
    return "".join(grids) + "".join(extremes)


def _release_section(tables: Sequence[Table]) -> str:
    """Accuracy against PSNR per release-policy family, beside its table."""
    chosen = [t for t in tables if t.key.startswith("release-")]
    if not chosen:
        return ""
    figures = "".join(png_img(release_policy_curves(release_points(t), title=t.title), f"accuracy against PSNR, {t.title}")
                      for t in chosen)
    return ('<h2 id="release">Release policies against a server that knows them</h2><p>Each figure: the '
            "accuracy users keep and the PSNR the server reaches, per policy, for the blind pair (a), its decoder "
            "retrained on released outputs (b), the pair trained through the policy (c), and the label-only "
            f"floor.</p>{figures}")


def _configs_section(records: Sequence[RunRecord]) -> str:
    parts = ['<h2 id="configs">Each run\'s config</h2>']
    for r in sorted(records, key=lambda r: r.name):
        config = (r.path / "config.yaml").read_text() if (r.path / "config.yaml").is_file() else "(missing)"
        status = read_status(r.path)
        training = (r.path / "training.json").read_text() if (r.path / "training.json").is_file() else ""
        took = f", {status['seconds']:.0f} s" if isinstance(status.get("seconds"), (int, float)) else ""
        parts.append(f"<details><summary>{_esc(r.name)} ({_esc(r.regime)}, seed {r.seed}{took})</summary>"
                     f"<pre>{_esc(config)}</pre>" + (f"<pre>{_esc(training)}</pre>" if training else "")
                     + "</details>")
    return "".join(parts)


def _header(folder: Path, records: Sequence[RunRecord], unfinished: Sequence[dict]) -> str:
    sweep = {}
    if (folder / SWEEP_FILE).is_file():
        try:
            sweep = read_json(folder / SWEEP_FILE, what="sweep record")
        except (OSError, ValueError):
            pass
    grid = (folder / GRID_COPY).read_text() if (folder / GRID_COPY).is_file() else ""
    name = sweep.get("grid") or folder.name
    datasets = sorted({r.dataset for r in records}, key=dataset_rank)
    facts = (f"{len(records)} finished runs, {len(unfinished)} without results; datasets: "
             f"{', '.join(datasets) or 'none'}; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    return (f"<h1>Vicious classifiers: sweep {_esc(name)}</h1><p class=note>{_esc(facts)}</p>"
            "<p>Each run trains a classifier F (and a decoder G) in one regime: <b>honest</b> (F for the task, "
            "then the best post-hoc decoder on frozen F), <b>vicious</b> (F and G jointly, the attack) or "
            "<b>autoencoder</b> (reconstruction only, the upper bound). The server observes only F's outputs "
            "(raw logits or softmax probabilities) and rebuilds the user's image with G. Risk R is the mean of "
            "r = d(x, mean) / d(x, reconstruction) in the Mahalanobis distance, exact (full pseudo-inverse, "
            "the paper's) and principal (the leading principal subspace).</p>"
            + (f"<details><summary>grid file</summary><pre>{_esc(grid)}</pre></details>" if grid else ""))


def build_report(folder: Path, *, num_images: int = 8) -> str:
    """The report page for the runs under ``folder``, as one HTML string."""
    folder = Path(folder)
    if num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {num_images}")
    records, unfinished = collect_runs(folder)
    if not records:
        raise ValueError(f"no finished runs under {folder} (no */metrics.json); run 'vicious sweep' first")
    keys = setting_keys(records)
    tables = tables_for(records, unfinished)
    contents = "".join(f'<a href="#{t.key}">{_esc(t.title)}</a> · ' for t in tables)
    contents += ('<a href="#scatter">accuracy vs risk</a> · <a href="#leakage-curves">leakage vs K</a> · '
                 '<a href="#histograms">r histograms</a> · <a href="#training">training curves</a> · '
                 '<a href="#reconstructions">reconstructions</a> · '
                 '<a href="#extremes">best and worst</a> · <a href="#configs">configs</a>')
    body = (_header(folder, records, unfinished) + f"<p>{contents}</p><h2>Tables</h2>"
            + "".join(table_html(t) for t in tables) + _release_section(tables) + _figures_section(records, keys)
            + _histograms_section(records, keys) + _training_section(records, keys)
            + _reconstruction_sections(records, keys, num_images)
            + _configs_section(records))
    return html_page(f"vicious sweep report: {folder.name}", body, style=STYLE, width="78rem")


def write_report(folder: Path, output: Path, *, num_images: int = 8) -> Path:
    """Write ``build_report(folder)`` to ``output`` (atomically); returns ``output``."""
    page = build_report(folder, num_images=num_images)
    atomic_write_text(Path(output), page)
    return Path(output)
