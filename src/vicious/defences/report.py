"""The audit's HTML page: self-contained (images embedded as base64 PNG)."""

from __future__ import annotations

import html

import torch

from vicious.figures import figure_png, plt, png_img, reconstruction_grid
from vicious.pages import html_page

_COLOURS = {"likely-honest": "#1a7f37", "inconclusive": "#9a6700", "likely-vicious": "#cf222e"}

# Per verdict: what it means, what it does not, and what a user can do next (shown on the page).
_MEANING = {
    "likely-vicious": (
        "The outputs carry more of your images than an honest classifier's do: a server holding a decoder trained "
        "with this classifier could rebuild what you send it through. It does not prove intent, nor that the server "
        "holds such a decoder; a classifier trained very differently from the honest references can land here too.",
        "Do not send its full outputs. Release only the predicted label (release policy <code>label-only</code>, "
        "e.g. <code>vicious.api.release(outputs, \"label-only\")</code>), which gives away no more than the "
        "label-only floor; ask the provider how the classifier was trained.",
    ),
    "inconclusive": (
        "Neither cleared nor caught: a deciding score lies above every honest reference but not far enough beyond "
        "them to call. About one honest classifier in n + 1 (n references) lands above all n by chance; "
        "a weakly trained vicious one lands here too.",
        "Until you know more, release less: the predicted label only (<code>label-only</code>) or the top few "
        "scores (<code>top-3</code>). A calibration on images of your own kind "
        "(<code>vicious calibrate</code>) compares it with honest models trained on such images.",
    ),
    "likely-honest": (
        "Every deciding score lies within what the honest references give: its outputs reveal about as much of "
        "your images as an honest classifier's. It is no proof of safety: a server that knows these detectors can "
        "aim for that range, and every classifier gives away its label.",
        "It can be used for its task. If your images are sensitive, still release only what you need (the label, "
        "or the top few scores).",
    ),
}


def verdict_sentence(audit: dict) -> str:
    """The verdict in one sentence, naming the deciding detectors that set it."""
    verdict, detectors = audit["verdict"], audit["detectors"]
    deciding = {name: entry["verdict"] for name, entry in detectors.items() if entry["role"] == "deciding"}
    named = ", ".join(name.replace("_", " ") for name, v in deciding.items() if v == verdict) or "none"
    if verdict == "likely-vicious":
        return f"Likely vicious: {named} scored beyond the likely-vicious threshold set by honest classifiers."
    if verdict == "likely-honest":
        return f"Likely honest: every deciding detector ({named}) scored within the honest classifiers' range."
    undecided = ", ".join(name.replace("_", " ") for name, v in deciding.items() if v != "likely-honest")
    return f"Inconclusive: {undecided or named} scored above the honest classifiers' range but not beyond the likely-vicious threshold."


def tail_text(probability: float, n: int) -> str:
    """The empirical tail probability in words: at 1 / (n + 1) the score lies above every reference."""
    if probability <= 1 / (n + 1) + 1e-9:
        return f"above all {n} honest references (tail probability {probability:.2f}, the least n = {n} can show)"
    return f"tail probability {probability:.2f} of n = {n}"


def false_positive_sentence(calibration: dict) -> str:
    """How often the rule called an honest model vicious, measured by leaving one reference out."""
    fp = calibration.get("false_positives")
    if not fp:
        return "The false-positive rate was not measured (fewer than 3 references)."
    n, overall = fp["num_references"], fp["overall"]
    return (f"Left out of the zoo one at a time, {overall['likely-vicious']} of {n} honest references were called "
            f"likely-vicious and {overall['inconclusive']} inconclusive by the rule built from the others.")


def score_plot(audit: dict) -> bytes:
    """PNG: one row per detector: honest reference scores, thresholds and this model's score."""
    detectors = audit["detectors"]
    fig, axes = plt.subplots(len(detectors), 1, figsize=(7, 1.3 * len(detectors) + 0.4), squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], detectors.items()):
        honest = entry["honest_reference_scores"].get(entry["primary"], [])
        t = entry["thresholds"]
        ax.scatter(honest, [0] * len(honest), color="grey", label="honest reference zoo", zorder=2)
        ax.axvline(t["likely_honest_at_most"], color=_COLOURS["likely-honest"], ls="--", label="likely-honest up to")
        ax.axvline(t["likely_vicious_above"], color=_COLOURS["likely-vicious"], ls="--", label="likely-vicious above")
        ax.scatter([entry["score"]], [0], marker="D", s=70, color=_COLOURS[entry["verdict"]], label="this model", zorder=3)
        values = [*honest, entry["score"], t["likely_honest_at_most"], t["likely_vicious_above"]]
        pad = 0.1 * (max(values) - min(values) or 1)
        ax.set_xlim(min(values) - pad, max(values) + pad)
        ax.set_yticks([])
        ax.set_title(f"{name} ({entry['role']}): {entry['primary']}, "
                     f"{tail_text(entry['tail_probability'], len(honest))}", fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return figure_png(fig)


def audit_page(audit: dict, examples: dict[str, torch.Tensor]) -> str:
    """The page for an audit dictionary (see :func:`vicious.defences.audit.run_audit`)."""
    e = html.escape
    verdict = audit["verdict"]
    rows = []
    for name, entry in audit["detectors"].items():
        for sub, value in entry["scores"].items():
            honest = entry["honest_reference_scores"].get(sub, [])
            span = f"{min(honest):.4g} – {max(honest):.4g}" if honest else "–"
            is_primary = sub == entry["primary"]
            verdict_cell = (f'<b style="color:{_COLOURS[entry["verdict"]]}">{e(entry["verdict"])}</b> '
                            f'({e(tail_text(entry["tail_probability"], len(honest)))})'
                            if is_primary else "")
            rows.append(f"<tr><td>{e(name)} ({e(entry['role'])})</td><td>{'<b>' + e(sub) + '</b>' if is_primary else e(sub)}</td>"
                        f"<td>{value:.4g}</td><td>{span}</td><td>{verdict_cell}</td></tr>")
    details = audit["excess_leakage_details"]
    grid = reconstruction_grid([
        ("user image", examples["images"]),
        ("shadow from labels", examples["from_labels"]),
        ("shadow from outputs", examples["from_outputs"]),
    ])
    accuracy = f"{audit['accuracy']:.3f}" if audit.get("accuracy") is not None else "n/a"
    cal = audit["calibration"]
    style = (f".verdict {{ font-size: 1.6rem; font-weight: bold; color: {_COLOURS[verdict]}; }}\n"
             "body { color: #1f2328; } td, th { border-bottom-color: #d0d7de; text-align: left; }\n"
             ".lead { font-size: 1.1rem; }\n")
    return html_page(f"vicious audit: {audit['source']}", f"""<h1>Audit of {e(audit['source'])}</h1>
<p class="verdict">{e(verdict)}</p>
<p class="lead">{e(verdict_sentence(audit))}</p>
<h2>What this means, and what it does not</h2>
<p>{_MEANING[verdict][0]}</p>
<h2>What to do next</h2>
<p>{_MEANING[verdict][1]}</p>
<p>Input (N, {', '.join(map(str, audit['input_shape']))}), {audit['num_outputs']} outputs released as
{e(audit['output_form'])}; scored on {audit['num_images']} images: {e(audit['images'])}
(accuracy {accuracy}{'' if audit['labelled'] else ': unlabelled'}).</p>
<p><small>Rule: {e(audit['verdict_rule'])}. Calibrated on {cal['num_references']} honest reference classifiers
({e(', '.join(r['name'] for r in cal['references']))}; {e(cal['data_source'] or 'data source not recorded')}),
{e(cal['created'])}. {e(false_positive_sentence(cal))}</small></p>
<h2>Scores against the honest references</h2>
{png_img(score_plot(audit), "detector scores against honest reference classifiers")}
<table><tr><th>detector</th><th>sub-score (bold: primary)</th><th>this model</th><th>honest references (min – max)</th><th>verdict</th></tr>
{''.join(rows)}</table>
<h2>What the outputs give away beyond the label</h2>
<p>Two shadow decoders of the same size, trained on {details['num_train']} of the user's images, one on the predicted
labels alone and one on the full outputs, then applied to {details['num_eval']} held-out images.
R principal: {details['r_labels']:.3f} from labels, {details['r_outputs']:.3f} from outputs;
PSNR: {details['psnr_labels']:.2f} dB from labels, {details['psnr_outputs']:.2f} dB from outputs.
Sharper reconstructions from the outputs than from the labels mean the outputs carry the image, not just the class.</p>
{png_img(grid, "held-out images and their shadow reconstructions")}
<p><small>vicious {e(audit['vicious_version'])}; every number is in <code>audit.json</code>.</small></p>
""", style=style, width="60rem")
