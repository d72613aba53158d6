"""Matplotlib figures of the project's pages (the demo, the sweep report, the audit page):
plain numbers and tensors in, PNG bytes out; ``png_img`` embeds them in a page."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:
    from vicious.runs.loggers import TrainingLog


def reconstruction_grid(rows: Sequence[tuple[str, torch.Tensor]], *, dpi: int = 110) -> bytes:
    """PNG bytes of a grid: one labelled row per (name, images N×C×H×W in [0, 1])."""
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.2, 1.15 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                image = images[c].detach().float().clamp(0, 1).cpu()
                if image.shape[0] == 1:
                    ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(image.permute(1, 2, 0).numpy())
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


def figure_png(fig, *, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def png_img(png: bytes, alt: str, *, pixels: bool = False) -> str:
    """An HTML ``<img>`` holding ``png`` itself (base64), so a page needs no other file;
    ``pixels``: the class that scales it without smoothing."""
    data = base64.b64encode(png).decode()
    return f'<img{" class=pixels" if pixels else ""} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


# --- sweep reports: plain numbers in, PNG bytes out ----------------------------------------

REGIME_COLOURS = {"honest": "tab:blue", "vicious": "tab:red", "autoencoder": "tab:gray"}
OUTPUT_MARKERS = {"raw": "o", "softmax": "^"}


def _colour(regime: str) -> str:
    return REGIME_COLOURS.get(regime, "tab:green")


def accuracy_risk_scatter(points: Sequence[dict], *, dpi: int = 110) -> bytes:
    """Accuracy against R (principal, exact), one marker per run.

    ``points``: dicts with ``accuracy``, ``r_principal``, ``r_exact`` (floats),
    ``regime`` (colour) and ``output`` (marker: raw o, softmax ^).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "r_principal", "R principal"), (axes[1], "r_exact", "R exact")):
        for regime in dict.fromkeys(p["regime"] for p in points):
            for output, marker in OUTPUT_MARKERS.items():
                chosen = [p for p in points if p["regime"] == regime and p["output"] == output]
                if chosen:
                    ax.scatter([p[key] for p in chosen], [p["accuracy"] for p in chosen], c=_colour(regime),
                               marker=marker, s=36, alpha=0.8, edgecolors="white", linewidths=0.5,
                               label=f"{regime}, {output}")
        ax.axvline(1.0, color="black", lw=0.8, ls=":")  # r = 1: no better than the population mean
        ax.set_xlabel(f"{title} (higher: more leakage)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


def risk_histograms(samples: dict[str, dict[str, Sequence[float]]], *, title: str = "", dpi: int = 110) -> bytes:
    """Histograms of per-image r, regimes overlaid: ``samples[regime][variant]`` with variant exact/principal."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, variant in zip(axes, ("principal", "exact")):
        pooled = np.concatenate([np.asarray(s[variant], dtype=float) for s in samples.values() if len(s[variant])]
                                or [np.zeros(1)])
        bins = np.linspace(pooled.min(), max(pooled.max(), pooled.min() + 1e-6), 41)
        for regime, values in samples.items():
            ax.hist(values[variant], bins=bins, histtype="step", lw=1.6, color=_colour(regime), label=regime)
        ax.axvline(1.0, color="black", lw=0.8, ls=":")
        ax.set_xlabel(f"per-image r, {variant}")
        ax.set_ylabel("test images")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


def leakage_curves(points: Sequence[dict], *, dpi: int = 110) -> bytes:
    """R principal and SSIM against K: a line per (regime, output, dataset) across its K (CelebA's
    attribute sets), a labelled marker for a dataset with one K.

    ``points``: dicts with ``K``, ``regime``, ``output``, ``dataset``, and ``r_principal``, ``ssim``
    with their ``*_std`` (None or float): one point per dataset and K.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = sorted({p["K"] for p in points})
    for ax, key, title in ((axes[0], "r_principal", "R principal"), (axes[1], "ssim", "SSIM")):
        labelled = set()
        for regime, output, dataset in dict.fromkeys((p["regime"], p["output"], p["dataset"]) for p in points):
            line = (regime, output, dataset)
            chosen = sorted((p for p in points if (p["regime"], p["output"], p["dataset"]) == line), key=lambda p: p["K"])
            label = None if (regime, output) in labelled else f"{regime}, {output}"
            labelled.add((regime, output))
            ax.errorbar([p["K"] for p in chosen], [p[key] for p in chosen],
                        yerr=[p.get(f"{key}_std") or 0 for p in chosen], color=_colour(regime),
                        marker=OUTPUT_MARKERS.get(output, "s"), ls="-" if output == "raw" else "--", capsize=3,
                        label=label)
            if len(chosen) == 1 and regime == "vicious":
                ax.annotate(dataset, (chosen[0]["K"], chosen[0][key]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
        if len(ks) > 1 and ks[-1] / ks[0] >= 4:
            ax.set_xscale("log")
        ax.set_xlabel("K (classes or attributes)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    if len(ks) == 1:
        axes[0].set_title(f"all runs have K = {ks[0]}: no curve yet", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


def release_policy_curves(points: Sequence[dict], *, title: str = "", dpi: int = 110) -> bytes:
    """Accuracy against PSNR behind release policies: a line per server (``arm``) and output
    form across the policies, each point labelled with its policy.

    ``points``: dicts with ``arm``, ``policy``, ``output`` (str) and ``accuracy``, ``psnr`` (float),
    in the order the lines join them.
    """
    fixed = {"no policy": "black", "label only": "tab:gray"}
    others = iter(("tab:orange", "tab:purple", "tab:red", "tab:green", "tab:brown", "tab:pink"))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    arms = list(dict.fromkeys(p["arm"] for p in points))
    for arm in arms:
        colour = fixed.get(arm) or next(others, "tab:olive")
        for output in dict.fromkeys(p["output"] for p in points):
            chosen = [p for p in points if p["arm"] == arm and p["output"] == output]
            if not chosen:
                continue
            ax.plot([p["accuracy"] for p in chosen], [p["psnr"] for p in chosen], color=colour,
                    marker=OUTPUT_MARKERS.get(output, "s"), ls="-" if output == "raw" else "--", label=f"{arm}, {output}")
            for p in chosen:
                ax.annotate(p["policy"], (p["accuracy"], p["psnr"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("accuracy of the released outputs")
    ax.set_ylabel("PSNR of the server's reconstruction (dB)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


# --- the demo page ---------------------------------------------------------------------------

DEMO_COLOURS = {"label only": "tab:gray", "honest": "tab:blue", "vicious": "tab:red"}


def demo_distributions(rows: dict[str, dict[str, Sequence[float]]], *, dpi: int = 110) -> bytes:
    """Histograms of per-image PSNR and r (principal), one outline per row:
    ``rows[name] = {"psnr": [...], "r_principal": [...]}``."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key, label in ((axes[0], "psnr", "per-image PSNR (dB)"), (axes[1], "r_principal", "per-image r, principal")):
        pooled = np.concatenate([np.asarray(v[key], dtype=float) for v in rows.values()])
        pooled = pooled[np.isfinite(pooled)]
        low, high = np.percentile(pooled, [0.5, 99.5]) if len(pooled) else (0.0, 1.0)
        bins = np.linspace(low, max(high, low + 1e-6), 41)
        for name, values in rows.items():
            ax.hist(np.clip(values[key], low, high), bins=bins, histtype="step", lw=1.6,
                    color=DEMO_COLOURS.get(name, "tab:green"), label=name)
        if key == "r_principal":
            ax.axvline(1.0, color="black", lw=0.8, ls=":")
        ax.set_xlabel(label)
        ax.set_ylabel("test images")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)


def training_curves(curves: dict[str, TrainingLog], *, dpi: int = 110) -> bytes:
    """Per phase (``curves[name]``, a ``vicious.runs.loggers.TrainingLog``): the
    training loss per logged step, and validation PSNR (from ``val/mse``) and accuracy per
    epoch. A phase without a value (the classifier's PSNR, the decoder's accuracy) has no line."""
    import math

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for name, log in curves.items():
        colour = {"vicious": "tab:red", "autoencoder": "tab:green"}.get(name.split()[0], "tab:blue")
        style = "--" if "classifier" in name else "-"
        psnr = [(p["epoch"], 10 * math.log10(1 / p["val/mse"])) for p in log.epochs if p.get("val/mse", 0) > 0]
        accuracy = [(p["epoch"], p["val/accuracy"]) for p in log.epochs if "val/accuracy" in p]
        if log.steps:
            axes[0].plot(*zip(*log.steps), color=colour, ls=style, lw=1, label=name)
        for ax, series in ((axes[1], psnr), (axes[2], accuracy)):
            if series:
                ax.plot(*zip(*series), marker="o", ms=3, color=colour, ls=style, label=name)
    for ax, x, label in ((axes[0], "step", "training loss"), (axes[1], "epoch", "validation PSNR (dB)"),
                         (axes[2], "epoch", "validation accuracy")):
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if axes[0].lines:
        axes[0].set_yscale("log")
    fig.tight_layout()
    return figure_png(fig, dpi=dpi)
