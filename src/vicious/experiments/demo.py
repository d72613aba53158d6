"""``vicious demo``: an honest and a vicious pair on Fashion-MNIST, side by side.

Uses the full Fashion-MNIST where it is found (``--data-root`` or Debian's
``dataset-fashion-mnist``), else the subset embedded in the package; trains the
CPU-sized presets, evaluates both on the test split, and writes a table, a picture
of reconstructions and an HTML page.
"""

from __future__ import annotations

import dataclasses
import html
import time
from pathlib import Path

from vicious.experiments.config import apply_overrides
from vicious.experiments.evaluation import evaluate_run, fit_statistics, reconstruct
from vicious.experiments.figures import png_img, reconstruction_grid
from vicious.experiments.files import atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable
from vicious.experiments.presets import get_preset
from vicious.experiments.runs import load_splits, open_run
from vicious.experiments.table import ACCURACY, MSE, PSNR, R_ABOVE_ONE, R_EXACT, R_PRINCIPAL, REID1, SSIM
from vicious.experiments.training import train_run

# Sized to finish in under 3 minutes on 2 CPU cores; recorded in each run's config.yaml.
# 1,000 validation images pick the same epochs as 2,000 on seeds 1-3 and save ~10 s.
DEMO_OVERRIDES = {"data.augment": False, "train.epochs": 6, "data.val_limit": 1000}

# The sweep tables' measures; the demo's own title for re-identification, which has one variant here.
COLUMNS = (ACCURACY, MSE, PSNR, SSIM, R_EXACT, R_PRINCIPAL, R_ABOVE_ONE,
           dataclasses.replace(REID1, title="re-id top-1"))


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


def run_demo(out: Path, *, data_root: str | None = None, overrides: list[str] | None = None,
             progress: bool = True, echo=print) -> dict[str, dict]:
    out = Path(out)
    check_writable(out)
    started = time.perf_counter()
    configs = {}
    for regime in ("honest", "vicious"):
        config = apply_overrides(get_preset(f"fashion-mnist-{regime}-small"),
                                 {**DEMO_OVERRIDES, "data.root": data_root, "train.progress": progress})
        configs[regime] = apply_overrides(config, overrides or [])
    splits = load_splits(configs["vicious"])
    echo(f"data: {splits.info.name} from {splits.source}: {len(splits.train)} train, "
         f"{len(splits.val)} validation, {len(splits.test)} test images")
    statistics = fit_statistics(splits)
    results = {}
    for regime, config in configs.items():
        echo(f"training the {regime} pair ({config.preset}, WRN-{config.model.depth}-{config.model.width}, "
             f"{config.train.epochs} epochs)")
        train_run(config, out / regime, resume=(out / regime / "config.yaml").exists(), splits=splits)
        results[regime] = evaluate_run(open_run(out / regime, splits), statistics=statistics)
    table = format_table(comparison_rows(results))
    echo("\ntest split, risk R in the principal subspace holding "
         f"{configs['vicious'].evaluation.variance_fraction:.0%} of pixel variance and exact (full pseudo-inverse):")
    echo(table)
    picture = _reconstructions(out, splits, configs["vicious"].evaluation.num_images)
    atomic_write_bytes(out / "reconstructions.png", picture)
    atomic_write_text(out / "report.html", demo_html(results, picture))
    summary = {"seconds": round(time.perf_counter() - started, 1), "data_source": splits.source,
               "results": results}
    atomic_write_json(out / "demo.json", summary)
    echo(f"\nwrote {out / 'report.html'}, {out / 'reconstructions.png'} and metrics.json per regime "
         f"({summary['seconds']:.0f} s)")
    return results


def _reconstructions(out: Path, splits, n: int) -> bytes:
    images = splits.test.images[:n]
    rows = [("original", images.float() / 255)]
    for regime in ("honest", "vicious"):
        _, x_rec = reconstruct(open_run(out / regime, splits), images)
        rows.append((regime, x_rec))
    return reconstruction_grid(rows)


def demo_html(results: dict[str, dict], picture: bytes) -> str:
    rows = comparison_rows(results)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    image = png_img(picture, "rows: originals, honest reconstructions, vicious reconstructions")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vicious demo: honest vs vicious classifier</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ padding: .35rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
</style></head><body>
<h1>Honest vs vicious classifier</h1>
<p>Both classifiers were trained on the same Fashion-MNIST images. The server only sees each
classifier's output vector; the decoder rebuilds the image from it. The vicious classifier was
trained jointly with its decoder; the honest one for the task alone, with a decoder fitted afterwards.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>R is the Mahalanobis reconstruction risk (METHOD.md): r &gt; 1 means the reconstruction is closer to the
user's image than the population mean. "principal" restricts the distance to the leading principal subspace;
"exact" uses the full pseudo-inverse, as the paper.</p>
<h2>Test images and their reconstructions</h2>
{image}
</body></html>
"""
