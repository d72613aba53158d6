"""``vicious demo``: an honest and a vicious classifier on Fashion-MNIST, beside the label-only floor.

Uses the full Fashion-MNIST where it is found (``--data-root`` or Debian's
``dataset-fashion-mnist``), else the subset embedded in the package; trains the
CPU-sized presets, evaluates both on the test split together with the label-only
floor (each test image replaced by the mean training image of its predicted class),
and writes a table, a picture of reconstructions and one self-contained HTML page.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import sys
import time
from pathlib import Path

import torch

from vicious.config.presets import get_preset
from vicious.config.schema import apply_overrides
from vicious.figures import (
    demo_distributions,
    png_img,
    reconstruction_grid,
    training_curves,
)
from vicious.pages import html_page
from vicious.runs.evaluation import evaluate_run, fit_statistics, label_only_decoder, reconstruct
from vicious.runs.files import atomic_write_bytes, atomic_write_json, atomic_write_text, refuse_outside_links
from vicious.runs.layout import load_splits, open_run
from vicious.runs.locks import folder_lock
from vicious.runs.loggers import read_training_log
from vicious.runs.training import train_run
from vicious.studies.table import ACCURACY, MSE, PSNR, R_ABOVE_ONE, R_EXACT, R_PRINCIPAL, REID1, SSIM

# Sized to finish in about 2 minutes on 2 CPU cores; recorded in each run's config.yaml.
# The -small presets already carry the fast schedule (docs/design.md); the demo skips
# augmentation (it doubles an epoch's cost), validates on 1,000 images and trains on 7,500,
# as many as the embedded subset holds, so the full data take as long.
DEMO_OVERRIDES = {"data.augment": False, "data.val_limit": 1000, "data.train_limit": 7500}
REGIMES = ("honest", "vicious")
LABEL_ONLY = "label only"

# The sweep tables' measures; the demo's own title for re-identification, which has one variant here.
COLUMNS = (ACCURACY, MSE, PSNR, SSIM, R_PRINCIPAL, R_ABOVE_ONE, R_EXACT,
           dataclasses.replace(REID1, title="re-id top-1"))

# What each column means, shown on the page (users have no other document at hand).
COLUMN_HELP = {
    "accuracy": "share of test images the classifier labels correctly (the label-only row repeats the vicious "
                "classifier's, whose predicted labels it uses).",
    "MSE": "mean squared error per pixel between each test image and its reconstruction, pixels in [0, 1]; lower "
           "means a closer reconstruction.",
    "PSNR (dB)": "peak signal-to-noise ratio, 10·log10(1 / MSE) of the test set's mean MSE; higher is closer. "
                 "+3 dB halves the error.",
    "SSIM": "structural similarity (11×11 Gaussian window, σ = 1.5), 1 for a perfect copy; it follows edges and "
            "textures rather than plain brightness.",
    "R principal": "reconstruction risk: the mean over test images of r = d(x, mean image) / d(x, reconstruction), "
                   "with d the Mahalanobis distance of the training images' pixel covariance, restricted to the "
                   "principal directions holding 90% of the pixel variance. r > 1: the reconstruction is closer to "
                   "the user's image than the population mean, the best guess of a server that saw nothing.",
    "r>1 (principal)": "share of test images with r > 1 (principal).",
    "R exact": "the same ratio with the full pseudo-inverse of the covariance, as the original paper defines R. "
               "Directions of tiny pixel variance dominate it, so it need not follow reconstruction quality; "
               "read R principal first.",
    "re-id top-1": "share of reconstructions whose nearest test image (principal subspace) is the one they came "
                   "from: how often the server could tell which user sent the output.",
}


def comparison_rows(results: dict[str, dict]) -> list[list[str]]:
    """Header row plus one row per regime, formatted."""
    rows = [["regime", *(m.title for m in COLUMNS)]]
    for regime, metrics in results.items():
        rows.append([regime, *(m.fmt.format(m.value(metrics)) for m in COLUMNS)])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def headline(results: dict[str, dict], num_outputs: int) -> str:
    """The page's first sentence: what the vicious server got, against honest and the label alone."""
    v, h, floor = results["vicious"], results["honest"], results[LABEL_ONLY]
    cost = (h["accuracy"] - v["accuracy"]) * 100
    price = (f"it cost {cost:.1f} points of accuracy" if cost > 0.05
             else f"its accuracy was {-cost:.1f} points {'higher' if cost < -0.05 else 'the same'}")
    return (f"From the {num_outputs} numbers each classifier returned, the vicious server rebuilt the test images at "
            f"{v['psnr']:.1f} dB PSNR (SSIM {v['ssim']:.2f}), {v['psnr'] - h['psnr']:.1f} dB more than an honest "
            f"classifier allows and {v['psnr'] - floor['psnr']:.1f} dB more than the label alone; {price}.")


def run_demo(out: Path, *, data_root: str | None = None, overrides: list[str] | None = None,
             progress: bool = True, echo=print) -> dict[str, dict]:
    out = Path(out)
    with folder_lock(out):  # one demo per folder; each regime's worker locks its own run folder
        refuse_outside_links(out)
        return _run_demo(out, data_root, overrides, progress, echo)


def _run_demo(out: Path, data_root, overrides, progress, echo) -> dict[str, dict]:
    started = time.perf_counter()
    configs = {}
    for regime in REGIMES:
        config = apply_overrides(get_preset(f"fashion-mnist-{regime}-small"),
                                 {**DEMO_OVERRIDES, "data.root": data_root, "train.progress": progress})
        configs[regime] = apply_overrides(config, overrides or [])
    for regime, config in configs.items():
        done = (out / regime / "classifier.safetensors").exists()
        echo(f"{'reusing' if done else 'training'} the {regime} pair ({config.preset}, "
             f"WRN-{config.model.depth}-{config.model.width}, {config.train.epochs} epochs)")
    with RegimeRunner(configs, out) as runner:
        # The workers start importing while this process reads the data.
        splits = load_splits(configs["vicious"])
        echo(f"data: {splits.info.name} from {splits.source}: {len(splits.train)} train, "
             f"{len(splits.val)} validation, {len(splits.test)} test images")
        results = runner.results(splits)
    # The label-only floor of the vicious classifier: what its predicted labels alone give away.
    results = {LABEL_ONLY: {**results["vicious"]["label_only"], "accuracy": results["vicious"]["accuracy"]},
               **results}
    table = format_table(comparison_rows(results))
    sentence = headline(results, splits.info.num_outputs)
    echo(f"\n{sentence}\n\ntest split ({len(splits.test)} images); R principal: the principal subspace holding "
         f"{configs['vicious'].evaluation.variance_fraction:.0%} of pixel variance, R exact: full pseudo-inverse")
    echo(table)
    figures = _page_figures(out, splits, configs["vicious"].evaluation.num_images)
    atomic_write_bytes(out / "reconstructions.png", figures["first"])
    atomic_write_text(out / "report.html", demo_html(results, sentence, figures))
    summary = {"seconds": round(time.perf_counter() - started, 1), "data_source": splits.source,
               "headline": sentence, "results": results}
    atomic_write_json(out / "demo.json", summary)
    echo(f"\nwrote {out / 'report.html'}, {out / 'reconstructions.png'} and metrics.json per regime "
         f"({summary['seconds']:.0f} s)")
    return results


def _train_and_evaluate_one(config, run_dir: Path, threads: int | None, splits=None) -> dict:
    """Train (unless finished) and evaluate one regime; in a worker process, on ``threads`` threads."""
    if threads:
        torch.set_num_threads(threads)
    splits = splits or load_splits(config)
    if not (run_dir / "classifier.safetensors").exists():
        train_run(config, run_dir, resume=(run_dir / "config.yaml").exists(), splits=splits)
    return evaluate_run(open_run(run_dir, splits), statistics=fit_statistics(splits))


class RegimeRunner:
    """Trains and evaluates the regimes side by side, one process each with the cores shared out:
    small networks use two threads poorly, so two one-thread processes finish sooner than one
    after the other (benchmarks/bench_demo.py). On one core: in order, in this process."""

    def __init__(self, configs: dict, out: Path) -> None:
        from vicious.studies.executors import available_cpus

        self.configs, self.out, self.pool, self.futures = configs, out, None, {}
        cores = available_cpus()
        if cores < 2:
            return
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        from vicious.runs.logs import quiet_lightning

        threads = max(1, cores // len(configs))
        # One thread per worker (2 cores): fork, as DataLoader workers are forked, so the workers
        # start with everything imported, 5 s sooner than spawned ones. A forked child must not
        # start OpenMP threads of a parent that used them (it can hang), so with more threads
        # per worker, and off Linux, spawn.
        method = "fork" if sys.platform == "linux" and threads == 1 else "spawn"
        self.pool = ProcessPoolExecutor(len(configs), mp_context=get_context(method), initializer=quiet_lightning)
        for regime, config in configs.items():
            if config.train.progress:  # two processes' bars would overwrite each other: lines instead
                config = apply_overrides(config, {"train.progress": "lines"})
            self.futures[regime] = self.pool.submit(_train_and_evaluate_one, config, out / regime, threads)

    def results(self, splits) -> dict[str, dict]:
        if self.pool is None:
            return {r: _train_and_evaluate_one(c, self.out / r, None, splits) for r, c in self.configs.items()}
        return {regime: future.result() for regime, future in self.futures.items()}

    def __enter__(self) -> RegimeRunner:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _per_sample(run_dir: Path) -> dict[str, list[float]]:
    with (run_dir / "per_sample.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows] for key in rows[0] if key != "index"} if rows else {}


def _page_figures(out: Path, splits, num_images: int) -> dict[str, bytes]:
    """PNGs of the page: the first test images, the best, median and worst rebuilt by the vicious
    decoder (rows: original, label only, honest, vicious), per-image distributions, training curves."""
    samples = {regime: _per_sample(out / regime) for regime in REGIMES}
    distributions = {
        LABEL_ONLY: {"psnr": samples["vicious"]["psnr_label_only"],
                     "r_principal": samples["vicious"]["r_principal_label_only"]},
        **{regime: {"psnr": s["psnr"], "r_principal": s["r_principal"]} for regime, s in samples.items()},
    }
    # Test images ranked by how well the vicious decoder rebuilt them (per-image PSNR).
    order = torch.tensor(samples["vicious"]["psnr"]).argsort(descending=True)
    k, middle = num_images, len(order) // 2 - num_images // 2
    picks = {"first": torch.arange(min(k, len(order))), "best": order[:k], "median": order[middle: middle + k],
             "worst": order[-k:]}
    index = torch.cat(list(picks.values()))
    images = splits.test.images[index]
    runs = {regime: open_run(out / regime, splits) for regime in REGIMES}
    outputs, vicious = reconstruct(runs["vicious"], images)
    rows = [("original", images.float() / 255), (LABEL_ONLY, label_only_decoder(splits)(outputs)),
            ("honest", reconstruct(runs["honest"], images)[1]), ("vicious", vicious)]
    figures, start = {}, 0
    for name, chosen in picks.items():
        part = slice(start, start + len(chosen))
        figures[name] = reconstruction_grid([(label, x[part]) for label, x in rows])
        start += len(chosen)
    curves = {
        "vicious (F and G jointly)": read_training_log(out / "vicious", "joint"),
        "honest classifier": read_training_log(out / "honest", "classifier"),
        "honest post-hoc decoder": read_training_log(out / "honest", "decoder"),
    }
    figures["distributions"] = demo_distributions(distributions)
    figures["curves"] = training_curves(curves)
    return figures


def demo_html(results: dict[str, dict], sentence: str, figures: dict[str, bytes]) -> str:
    rows = comparison_rows(results)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(f'<tr class="{html.escape(row[0].split()[0])}">'
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    help_items = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" for name, text in COLUMN_HELP.items())
    grids = "".join(
        f"<h3>{title}</h3>" + png_img(figures[key], f"{title}: originals, label-only, honest and vicious "
                                      "reconstructions", pixels=True)
        for key, title in (("best", "Best rebuilt by the vicious decoder"), ("median", "Median"),
                           ("worst", "Worst rebuilt by the vicious decoder")) if key in figures)
    psnr_gap = results["vicious"]["psnr"] - results["honest"]["psnr"]
    style = """
p.lead { font-size: 1.2rem; border-left: 4px solid #d62728; padding-left: .8rem; }
table { font-size: .9rem; } th, td { padding: .35rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.vicious td:first-child { color: #d62728; font-weight: 600; } tr.honest td:first-child { color: #1f77b4; }
dt { font-weight: 600; margin-top: .4rem; } dd { margin-left: 1.2rem; color: #444; }
"""
    return html_page("vicious demo: honest vs vicious classifier", f"""<h1>Honest vs vicious classifier</h1>
<p class="lead">{html.escape(sentence)}</p>
<p>A server ships a classifier to its users, who run it on their own images and send back only its output: one
number per class. Both classifiers here were trained on the same Fashion-MNIST images. The <b>vicious</b> one was
trained jointly with a secret decoder that rebuilds the image from those numbers; the <b>honest</b> one was trained
for the task alone, after which the best decoder we could train on its outputs (same architecture, same budget)
was fitted to it. The <b>label only</b> row is the floor every classifier gives away: each test image replaced by
the mean training image of the class the classifier predicted. A vicious classifier shows itself as
reconstructions well above both: here {psnr_gap:+.1f} dB PSNR over honest.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>What the columns mean</h2>
<dl>{help_items}</dl>
<h2>Test images and their reconstructions</h2>
<p class="note">Rows: the user's image, then what the server rebuilds from the label alone, from the honest
classifier's outputs, and from the vicious classifier's outputs.</p>
{png_img(figures["first"], "rows: originals, label-only, honest and vicious reconstructions", pixels=True)}
{grids}
<h2>Per-image distributions</h2>
<p class="note">How the PSNR and the risk r (principal) of single test images spread for each row; the dotted
line marks r = 1, where a reconstruction is as close as the population mean.</p>
{png_img(figures["distributions"], "histograms of per-image PSNR and r for label-only, honest and vicious")}
<h2>Training</h2>
<p class="note">The training loss (every few optimiser steps, log scale), then validation PSNR and accuracy after
every epoch; each run keeps its best epoch (for the vicious pair: lowest (1 − accuracy) + (1 − SSIM) + 5·MSE).</p>
{png_img(figures["curves"], "training loss per step, validation PSNR and accuracy per epoch")}
""", style=style)
