"""How well each detector tells vicious from honest classifiers (Fashion-MNIST).

Trains a population of small classifiers (WRN-10-1, CPU-sized): honest ones,
vicious ones (varied seeds, beta_R and both output forms) and adaptive vicious
ones (an entropy penalty beta_ent > 0 that makes outputs confident and honest-
looking), scores each with every detector of the suite on its own user images
(the test split), and prints, for every sub-score, the ROC AUC and the true-positive
rate at 5 % false positives, honest vs vicious and honest vs adaptive.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_detectors.py --out /tmp/bench-detectors

Trained runs are kept in --out and reused when the script runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch

from vicious.data import load_dataset
from vicious.defences import SuiteSettings, open_classifier, roc_auc, score_classifier, tpr_at_fpr
from vicious.defences.calibration import (
    DECIDING_DETECTORS,
    REFERENCE_EPOCHS,
    REFERENCE_IMAGES,
    Calibration,
    reference_config,
    user_images,
)
from vicious.defences.shadow import reconstruction_measures
from vicious.defences.suite import PRIMARY
from vicious.metrics import ImageStatistics
from vicious.runs.files import atomic_write_json
from vicious.runs.layout import open_run
from vicious.runs.training import train_run

# (name, regime, output form, seed, beta_R, beta_ent); honest runs ignore beta_R in F's training.
POPULATION = [
    *[(f"honest-{i}", "honest", ("raw", "softmax")[i % 2], i, 3.0, 0.0) for i in range(1, 7)],
    ("vicious-1", "vicious", "raw", 11, 1.0, 0.0),
    ("vicious-2", "vicious", "softmax", 12, 1.0, 0.0),
    ("vicious-3", "vicious", "raw", 13, 2.0, 0.0),
    ("vicious-4", "vicious", "softmax", 14, 2.0, 0.0),
    ("vicious-5", "vicious", "raw", 15, 3.0, 0.0),
    ("vicious-6", "vicious", "softmax", 16, 3.0, 0.0),
    ("adaptive-1", "vicious", "raw", 21, 3.0, 1.0),
    ("adaptive-2", "vicious", "softmax", 22, 3.0, 1.0),
    ("adaptive-3", "vicious", "raw", 23, 3.0, 3.0),
]


def kind(name: str) -> str:
    return name.split("-")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench-detectors", help="run directories (reused) and results")
    parser.add_argument("--json", help="results file (default: OUT/bench_detectors.json)")
    parser.add_argument("--image-size", type=int, default=16, help="side of the images (16 keeps the population CPU-sized)")
    parser.add_argument("--train-limit", type=int, default=REFERENCE_IMAGES, help="training images per model")
    parser.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS, help="epochs per model")
    parser.add_argument("--num-images", type=int, default=2000, help="user images per audit (test split)")
    parser.add_argument("--shadow-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared CPU)")
    parser.add_argument("--seed-offset", type=int, default=0, help="added to every seed: a fresh population")
    parser.add_argument("--only", nargs="*", help="names of the population to use (default: all)")
    parser.add_argument("--thresholds-from", help="another run's results JSON: calibrate the audit's verdicts on its "
                        "honest models and apply them to this population (an out-of-sample check)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    settings = SuiteSettings(num_images=args.num_images, sensitivity_images=400, shadow_epochs=args.shadow_epochs,
                             shadow_hidden=256 if args.image_size <= 16 else 512)
    splits = load_dataset("fashion-mnist", image_size=args.image_size)
    images, labels = user_images(splits, settings)
    statistics = ImageStatistics.fit(splits.train.subset(10_000, seed=0).float_images())
    started = time.perf_counter()
    rows = []
    for name, regime, output, seed, beta_r, beta_ent in POPULATION:
        if args.only and name not in args.only:
            continue
        seed += args.seed_offset
        config = reference_config("fashion-mnist", seed, train_limit=args.train_limit, epochs=args.epochs,
                                  image_size=args.image_size, regime=regime, output=output,
                                  overrides={"loss.beta_r": beta_r, "loss.beta_ent": beta_ent, "train.accelerator": "cpu"})
        run_dir = out / name
        t0 = time.perf_counter()
        if not (run_dir / "classifier.safetensors").exists():
            train_run(config, run_dir, resume=(run_dir / "config.yaml").exists())
        t1 = time.perf_counter()
        box = open_classifier(run_dir, splits.info, args.image_size)  # softmax runs release probabilities
        result = score_classifier(box, images, settings, labels)
        server = server_risk(run_dir, images[:500], statistics)
        t2 = time.perf_counter()
        rows.append({"name": name, "kind": kind(name), "regime": regime, "output": output, "seed": seed,
                     "beta_r": beta_r, "beta_ent": beta_ent, "accuracy": result.accuracy, "server": server,
                     "scores": result.scores, "leakage": result.leakage.details,
                     "train_seconds": round(t1 - t0, 1), "score_seconds": round(t2 - t1, 1)})
        primary = "  ".join(f"{d}={v:.3f}" for d, v in result.primary().items())
        print(f"{name:11} acc {result.accuracy:.3f}  server R {server['r_principal']:.3f}  {primary}  "
              f"(train {t1 - t0:.0f}s, score {t2 - t1:.0f}s)", flush=True)

    separation = evaluate(rows)
    print_tables(rows, separation)
    verdicts = out_of_sample_verdicts(Path(args.thresholds_from), rows, settings) if args.thresholds_from else None
    results = {"verdicts": verdicts, "settings": settings.model_dump(), "image_size": args.image_size, "seed_offset": args.seed_offset, "train_limit": args.train_limit,
               "epochs": args.epochs, "models": rows, "separation": separation,
               "seconds": round(time.perf_counter() - started, 1)}
    path = Path(args.json) if args.json else out / "bench_detectors.json"
    atomic_write_json(path, results)
    print(f"\nresults: {path}  ({results['seconds']:.0f} s)")


def server_risk(run_dir: Path, images: torch.Tensor, statistics: ImageStatistics) -> dict[str, float]:
    """What the server's own decoder (vicious: trained jointly; honest: post-hoc) recovers."""
    run = open_run(run_dir)
    with torch.no_grad():
        reconstructions = run.decoder(run.classifier(images))
    return reconstruction_measures(images, reconstructions, statistics)


def out_of_sample_verdicts(path: Path, rows: list[dict], settings: SuiteSettings) -> dict:
    """The audit's verdict rule with thresholds from another population's honest models."""
    reference = json.loads(path.read_text())
    honest = [r for r in reference["models"] if r["kind"] == "honest"]
    scores = {d: {s: [r["scores"][d][s] for r in honest] for s in subs} for d, subs in honest[0]["scores"].items()}
    calibration = Calibration.from_scores("fashion-mnist", reference["image_size"], settings, scores, [])
    print(f"\nAudit verdicts, thresholds from the {len(honest)} honest models of {path} "
          f"(deciding: {', '.join(DECIDING_DETECTORS)})")
    table: dict = {}
    for r in rows:
        overall, each = calibration.verdicts({d: r["scores"][d][PRIMARY[d]] for d in r["scores"]})
        table[r["name"]] = {"overall": overall, **each}
        print(f"{r['name']:11} {overall:15} " + "  ".join(f"{d}: {v}" for d, v in each.items()))
    counts = {kind_: {v: sum(1 for n, t in table.items() if kind(n) == kind_ and t["overall"] == v)
                      for v in ("likely-honest", "inconclusive", "likely-vicious")}
              for kind_ in ("honest", "vicious", "adaptive")}
    for kind_, c in counts.items():
        print(f"{kind_:9} " + ", ".join(f"{v} {n}" for v, n in c.items()))
    return {"thresholds_from": str(path), "thresholds": {d: t.model_dump() for d, t in calibration.thresholds.items()},
            "models": table, "counts": counts}


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
    print("(server R: the run's own decoder, R principal on 500 test images; shadow: the user's decoders)")
    print(f"{'model':11} {'output':8} {'beta_R':>6} {'beta_ent':>8} {'acc':>6} {'server R':>8} "
          f"{'shadow R out':>12} {'shadow R lab':>12} {'PSNR out':>9} {'PSNR lab':>9}")
    for r in rows:
        d = r["leakage"]
        print(f"{r['name']:11} {r['output']:8} {r['beta_r'] if r['regime'] != 'honest' else 0:6.1f} {r['beta_ent']:8.1f} "
              f"{r['accuracy']:6.3f} {r['server']['r_principal']:8.3f} {d['r_outputs']:12.3f} {d['r_labels']:12.3f} "
              f"{d['psnr_outputs']:9.2f} {d['psnr_labels']:9.2f}")


if __name__ == "__main__":
    main()
