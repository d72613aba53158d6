"""How well each detector tells vicious from honest classifiers (Fashion-MNIST).

Trains a population of small classifiers (WRN-10-1, CPU-sized): honest ones,
vicious ones (varied seeds, beta_R and both output forms) and adaptive vicious
ones (an entropy penalty beta_ent > 0 that makes outputs confident and honest-
looking), scores each with every detector of the suite on its own user images
(the test split), and prints, for every sub-score, the ROC AUC and the true-positive
rate at 5 % false positives, honest vs vicious and honest vs adaptive.

    nice -n 10 python benchmarks/bench_detectors.py --out /tmp/bench-detectors

Trained runs are kept in --out and reused when the script runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

from vicious.data import load_dataset
from vicious.defences import SuiteSettings, open_classifier, roc_auc, score_classifier, tpr_at_fpr
from vicious.defences.suite import PRIMARY
from vicious.experiments.config import apply_overrides
from vicious.experiments.files import atomic_write_json
from vicious.experiments.presets import get_preset
from vicious.experiments.runs import load_splits
from vicious.experiments.training import train_run

# (name, regime, output form, seed, beta_R, beta_ent)
POPULATION = [
    ("honest-1", "honest", "raw", 1, 3.0, 0.0),
    ("honest-2", "honest", "softmax", 2, 3.0, 0.0),
    ("honest-3", "honest", "raw", 3, 3.0, 0.0),
    ("honest-4", "honest", "softmax", 4, 3.0, 0.0),
    ("honest-5", "honest", "raw", 5, 3.0, 0.0),
    ("vicious-1", "vicious", "raw", 11, 1.0, 0.0),
    ("vicious-2", "vicious", "softmax", 12, 1.0, 0.0),
    ("vicious-3", "vicious", "raw", 13, 3.0, 0.0),
    ("vicious-4", "vicious", "softmax", 14, 3.0, 0.0),
    ("adaptive-1", "vicious", "raw", 21, 3.0, 1.0),
    ("adaptive-2", "vicious", "softmax", 22, 3.0, 1.0),
]


def population_config(regime: str, output: str, seed: int, beta_r: float, beta_ent: float, args):
    name = f"fashion-mnist-{regime}" + ("-softmax" if output == "softmax" else "") + "-small"
    return apply_overrides(get_preset(name), {
        "seed": seed, "loss.beta_r": beta_r, "loss.beta_ent": beta_ent,
        "data.train_limit": args.train_limit, "data.val_limit": 500, "data.test_limit": 500,
        "data.augment": False, "train.epochs": args.epochs, "train.decoder_epochs": 1,
        "train.batch_size": 64, "train.progress": False, "train.accelerator": "cpu",
    })


def kind(name: str) -> str:
    return name.split("-")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench-detectors", help="run directories (reused) and results")
    parser.add_argument("--json", help="results file (default: OUT/bench_detectors.json)")
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-images", type=int, default=2000, help="user images per audit")
    parser.add_argument("--shadow-epochs", type=int, default=30)
    parser.add_argument("--only", nargs="*", help="names of the population to use (default: all)")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    settings = SuiteSettings(num_images=args.num_images, sensitivity_images=400, shadow_epochs=args.shadow_epochs)
    splits = load_dataset("fashion-mnist")
    user = splits.test.subset(settings.num_images, seed=settings.seed)
    images, labels = user.float_images(), user.labels
    started = time.perf_counter()
    rows = []
    for name, regime, output, seed, beta_r, beta_ent in POPULATION:
        if args.only and name not in args.only:
            continue
        config = population_config(regime, output, seed, beta_r, beta_ent, args)
        run_dir = out / name
        t0 = time.perf_counter()
        if not (run_dir / "classifier.safetensors").exists():
            train_run(config, run_dir, resume=(run_dir / "config.yaml").exists(), splits=load_splits(config))
        t1 = time.perf_counter()
        box = open_classifier(run_dir, splits.info)  # softmax runs release probabilities
        result = score_classifier(box, images, settings, labels)
        t2 = time.perf_counter()
        rows.append({"name": name, "kind": kind(name), "regime": regime, "output": output, "seed": seed,
                     "beta_r": beta_r, "beta_ent": beta_ent, "accuracy": result.accuracy,
                     "scores": result.scores, "leakage": result.leakage.details,
                     "train_seconds": round(t1 - t0, 1), "score_seconds": round(t2 - t1, 1)})
        primary = "  ".join(f"{d}={v:.3f}" for d, v in result.primary().items())
        print(f"{name:11} acc {result.accuracy:.3f}  {primary}  (train {t1 - t0:.0f}s, score {t2 - t1:.0f}s)", flush=True)

    separation = evaluate(rows)
    print_tables(rows, separation)
    results = {"settings": settings.model_dump(), "train_limit": args.train_limit, "epochs": args.epochs,
               "models": rows, "separation": separation, "seconds": round(time.perf_counter() - started, 1)}
    path = Path(args.json) if args.json else out / "bench_detectors.json"
    atomic_write_json(path, results)
    print(f"\nresults: {path}  ({results['seconds']:.0f} s)")


def evaluate(rows: list[dict]) -> dict:
    """AUC and TPR at 5 % FPR of every sub-score, honest vs vicious and honest vs adaptive."""
    separation: dict = {}
    honest = [r for r in rows if r["kind"] == "honest"]
    for detector, subscores in rows[0]["scores"].items():
        for sub in subscores:
            key = f"{detector}.{sub}"
            neg = [r["scores"][detector][sub] for r in honest]
            separation[key] = {"primary": PRIMARY[detector] == sub}
            for against in ("vicious", "adaptive"):
                pos = [r["scores"][detector][sub] for r in rows if r["kind"] == against]
                if neg and pos:
                    separation[key][against] = {"auc": roc_auc(neg, pos), "tpr_at_5_fpr": tpr_at_fpr(neg, pos, 0.05)}
    return separation


def print_tables(rows: list[dict], separation: dict) -> None:
    counts = {k: sum(r["kind"] == k for r in rows) for k in ("honest", "vicious", "adaptive")}
    print(f"\nSeparation ({counts['honest']} honest, {counts['vicious']} vicious, {counts['adaptive']} adaptive); "
          "* = the detector's primary score")
    print(f"{'detector.sub-score':40} {'AUC h/v':>8} {'TPR@5%':>7} {'AUC h/a':>8} {'TPR@5%':>7}")
    for key, entry in separation.items():
        cells = []
        for against in ("vicious", "adaptive"):
            e = entry.get(against)
            cells += [f"{e['auc']:8.3f}", f"{e['tpr_at_5_fpr']:7.2f}"] if e else [f"{'-':>8}", f"{'-':>7}"]
        print(f"{key + (' *' if entry['primary'] else ''):40} {' '.join(cells)}")
    print("\nPer model (excess leakage details)")
    print(f"{'model':11} {'output':8} {'beta_R':>6} {'beta_ent':>8} {'acc':>6} {'R out':>7} {'R lab':>7} {'PSNR out':>9} {'PSNR lab':>9}")
    for r in rows:
        d = r["leakage"]
        print(f"{r['name']:11} {r['output']:8} {r['beta_r']:6.1f} {r['beta_ent']:8.1f} {r['accuracy']:6.3f} "
              f"{d['r_outputs']:7.3f} {d['r_labels']:7.3f} {d['psnr_outputs']:9.2f} {d['psnr_labels']:9.2f}")


if __name__ == "__main__":
    main()
