"""What each release policy costs the user and leaves the server (Fashion-MNIST).

Trains one vicious pair (F, G) (CPU-sized WRN-10-1) unless --run names one, then,
for every release policy applied to F's outputs before they leave the device,
prints the accuracy kept and the reconstruction risk R (principal subspace, 90 %
of the variance) and PSNR of

* (a) the vicious decoder G as trained, fed the released vectors;
* (b) the adaptive server: G fine-tuned on released outputs of its own training
  images (policy applied afresh each batch), then fed the released test vectors;

and the distortion: the mean total variation between observed and released probabilities.

``purifier-W`` is a user-side purifier (vicious.defences.purifier, after Yang et al. 2020,
arXiv 2005.03915) with distortion weight W, fitted on the first --user-images test images (the
user's own) against a shadow decoder, and saved to OUT/purifier-W.safetensors as a user would
ship it. Every policy is measured on the test images after those, so the user's images are never
the measured ones; the adaptive server retrains on its own training images purified by the
user's purifier, as it would receive them.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_release_policies.py --out /tmp/bench-release
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import torch

from vicious.config.presets import cpu_sized_config
from vicious.defences.purifier import fit_purifier, save_purifier
from vicious.defences.release_evaluation import evaluate_policy, observed_outputs
from vicious.release.outputs import observed_form
from vicious.release.policies import parse_policy
from vicious.runs.evaluation import fit_statistics
from vicious.runs.files import atomic_write_json
from vicious.runs.layout import open_run
from vicious.runs.training import train_run

POLICIES = [
    "none", "top-1", "top-3", "label-only", "round-1", "round-2", "temperature-3",
    "gaussian-0.02", "gaussian-0.1", "laplace-0.02", "laplace-0.1", "purifier-0", "purifier-0.1", "purifier-1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench-release", help="where the pair is trained (reused) and results go")
    parser.add_argument("--run", help="an existing vicious run directory to use instead of training one")
    parser.add_argument("--json", help="results file (default: OUT/bench_release_policies.json)")
    parser.add_argument("--output", choices=["raw", "softmax"], default="softmax", help="what the server observes")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--train-limit", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--test-images", type=int, default=3000, help="test split size: the user's part, then the measured")
    parser.add_argument("--user-images", type=int, default=1000, help="test images the user fits a purifier on")
    parser.add_argument("--purifier-epochs", type=int, default=100)
    parser.add_argument("--retrain-epochs", type=int, default=2, help="adaptive server's fine-tuning epochs")
    parser.add_argument("--policies", nargs="*", default=POLICIES)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    purifier_weights = {p: _purifier_weight(p) for p in args.policies if p.startswith("purifier-")}
    policies = {p: parse_policy(p) for p in args.policies if p not in purifier_weights}  # refused before training
    out = Path(args.out)
    started = time.perf_counter()

    run_dir = Path(args.run) if args.run else out / f"vicious-{args.output}"
    if not args.run and not (run_dir / "classifier.safetensors").exists():
        config = cpu_sized_config("fashion-mnist", 1, train_limit=args.train_limit, epochs=args.epochs,
                                  image_size=args.image_size, regime="vicious", output=args.output,
                                  overrides={"data.test_limit": args.test_images, "train.accelerator": "cpu"})
        print(f"training the vicious pair ({args.output} outputs, {args.train_limit} images, {args.epochs} epochs)", flush=True)
        train_run(config, run_dir, resume=(run_dir / "config.yaml").exists())
    run = open_run(run_dir)
    if run.config.regime != "vicious":
        raise SystemExit(f"{run_dir} is a {run.config.regime} run; the release benchmark needs a vicious pair")
    form = observed_form(run.config.output)
    statistics = fit_statistics(run.splits)
    all_images, all_labels = run.splits.test.float_images(), run.splits.test.labels
    if not 0 < args.user_images < len(all_images):
        raise SystemExit(f"--user-images must leave test images to measure on (the run has {len(all_images)}); "
                         "lower it or raise --test-images")
    user_images, test_images, labels = all_images[: args.user_images], all_images[args.user_images :], all_labels[args.user_images :]
    train_images = run.splits.train.float_images()
    test = (observed_outputs(run.classifier, test_images, form), test_images, labels)
    train = (observed_outputs(run.classifier, train_images, form), train_images)
    user_outputs = observed_outputs(run.classifier, user_images, form)

    rows = []
    for name in args.policies:
        t0 = time.perf_counter()
        if name in purifier_weights:
            policy = fit_purifier(user_outputs, user_images, form, epochs=args.purifier_epochs, seed=0,
                                  distortion_weight=purifier_weights[name])
            save_purifier(policy, out / f"{name}.safetensors")
        else:
            policy = policies[name]
        result = evaluate_policy(policy, run.decoder, form, test=test, train=train, statistics=statistics,
                                 retrain_epochs=args.retrain_epochs, loss=run.config.loss, seed=0)
        result["policy"] = name if name in purifier_weights else result["policy"]
        result["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(result)
        print(f"{result['policy']:15} accuracy {result['accuracy']:.3f}  trained R {result['trained']['r_principal']:.3f}  "
              f"retrained R {result['retrained']['r_principal']:.3f}  ({result['seconds']:.0f}s)", flush=True)

    print(f"\nRelease policies on a vicious Fashion-MNIST pair ({run.config.output} outputs, WRN-{run.config.model.depth}-"
          f"{run.config.model.width}, {run.config.data.image_size} px, {len(test_images)} test images measured, "
          f"{len(user_images)} the user's); R = reconstruction risk on the principal subspace (90 % variance), "
          "PSNR of the mean MSE, distortion = mean total variation between observed and released probabilities")
    print(f"{'policy':15} {'accuracy':>8} {'distortion':>10} {'R trained G':>12} {'PSNR trained':>13} "
          f"{'R retrained G':>14} {'PSNR retrained':>15}")
    for r in rows:
        print(f"{r['policy']:15} {r['accuracy']:8.3f} {r['distortion']:10.3f} {r['trained']['r_principal']:12.3f} "
              f"{r['trained']['psnr']:13.2f} {r['retrained']['r_principal']:14.3f} {r['retrained']['psnr']:15.2f}")
    results = {"run": str(run_dir), "output": run.config.output, "image_size": run.config.data.image_size,
               "train_images": len(train_images), "test_images": len(test_images), "user_images": len(user_images),
               "purifier_epochs": args.purifier_epochs,
               "retrain_epochs": args.retrain_epochs, "policies": rows, "seconds": round(time.perf_counter() - started, 1)}
    path = Path(args.json) if args.json else out / "bench_release_policies.json"
    atomic_write_json(path, results)
    print(f"\nresults: {path}  ({results['seconds']:.0f} s)")


def _purifier_weight(name: str) -> float:
    """The distortion weight W of ``purifier-W``."""
    try:
        weight = float(name.removeprefix("purifier-"))
    except ValueError:
        weight = -1.0
    if not weight >= 0:
        raise SystemExit(f"{name!r}: a purifier is purifier-W with a distortion weight W >= 0, e.g. purifier-0.3")
    return weight


if __name__ == "__main__":
    main()
