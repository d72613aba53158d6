"""Does a covert encoding (``model.covert_key``) hide a vicious classifier from excess leakage?

Trains, on the same data with the same seed and budget (``cpu_sized_config``, the
``-small`` presets), a vicious pair without a key, the same pair with a key (G reads F's
outputs through the key's mixing, ``vicious.models.covert``) and an honest classifier with
its post-hoc decoder. Printed, per classifier: accuracy and its own decoder's PSNR on the
test split (what the server gets), then excess leakage's PSNR gap (the deciding score) and
the two shadow decoders' PSNRs at each shadow budget (user images x shadow epochs), scored
through a BlackBox as the audit does.

    OMP_NUM_THREADS=1 python benchmarks/bench_covert.py --out /tmp/bench-covert [--json F]

Runs are kept in --out and reused when the script runs again.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from vicious.config.presets import cpu_sized_config
from vicious.config.schema import parse_override
from vicious.defences.black_box import BlackBox
from vicious.defences.calibration import user_images
from vicious.defences.excess_leakage import ExcessLeakage
from vicious.defences.suite import make_settings
from vicious.release.outputs import observed_form
from vicious.runs.evaluation import evaluate_run, fit_statistics
from vicious.runs.files import atomic_write_json
from vicious.runs.layout import load_splits, open_run
from vicious.runs.training import train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key", type=int, default=7, help="the covert run's model.covert_key")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--user-images", type=int, nargs="+", default=[500, 2000], help="shadow budgets: user images")
    parser.add_argument("--shadow-epochs", type=int, nargs="+", default=[10, 30], help="shadow budgets: epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every run")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="vicious-covert-"))
    # The test split holds the user's images: as many as the largest budget asks for.
    common = {"data.test_limit": max(args.user_images), **dict(parse_override(item) for item in args.set)}
    arms = {
        "vicious": ("vicious", {}),
        f"vicious, key {args.key}": ("vicious", {"model.covert_key": args.key}),
        "honest": ("honest", {}),
    }
    configs = {name: cpu_sized_config(args.dataset, args.seed, train_limit=args.train_limit, epochs=args.epochs,
                                      regime=regime, overrides={**common, **extra})
               for name, (regime, extra) in arms.items()}
    splits = load_splits(configs["vicious"])
    statistics = fit_statistics(splits)
    rows, seconds = [], {}
    for name, config in configs.items():
        folder = out / name.replace(", ", "-").replace(" ", "")
        started = time.perf_counter()
        train_run(config, folder, resume=(folder / "config.yaml").exists(), splits=splits)
        run = open_run(folder, splits)
        own = evaluate_run(run, statistics=statistics, write=False)
        box = BlackBox.from_module(run.classifier, splits.info, config.data.image_size,
                                   form=observed_form(config.output), source=name)
        row = {"classifier": name, "accuracy": own["accuracy"], "own_psnr": own["psnr"],
               "label_only_psnr": own["label_only"]["psnr"], "budgets": {}}
        for num_images, epochs in itertools.product(args.user_images, args.shadow_epochs):
            settings = make_settings(num_images=num_images, shadow_epochs=epochs)
            images, _ = user_images(splits, settings)
            detector = ExcessLeakage(eval_fraction=settings.eval_fraction, epochs=epochs, hidden=settings.shadow_hidden,
                                     variance_fraction=settings.variance_fraction, seed=settings.seed,
                                     decoder=settings.shadow_decoder, patience=settings.shadow_patience)
            details = detector.assess(box, images).details
            row["budgets"][f"{num_images}x{epochs}"] = {
                "psnr_gap": details["psnr_outputs"] - details["psnr_labels"],
                "psnr_outputs": details["psnr_outputs"], "psnr_labels": details["psnr_labels"]}
        seconds[name] = round(time.perf_counter() - started, 1)
        rows.append(row)
    budgets = list(rows[0]["budgets"])
    header = ["classifier", "accuracy", "own G PSNR", "label-only PSNR",
              *(f"gap {b}" for b in budgets), *(f"outputs/labels {b}" for b in budgets)]
    lines = [[r["classifier"], f"{r['accuracy']:.3f}", f"{r['own_psnr']:.2f}", f"{r['label_only_psnr']:.2f}",
              *(f"{r['budgets'][b]['psnr_gap']:+.2f}" for b in budgets),
              *(f"{r['budgets'][b]['psnr_outputs']:.2f}/{r['budgets'][b]['psnr_labels']:.2f}" for b in budgets)]
             for r in rows]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(line) + " |" for line in lines))
    print(f"\nbudgets: user images x shadow epochs (mlp shadow decoders, a quarter held out); PSNR in dB; "
          f"seconds per classifier: {seconds}; runs in {out}")
    if args.json:
        atomic_write_json(Path(args.json), {"rows": rows, "seconds": seconds, "args": vars(args)})


if __name__ == "__main__":
    main()
