"""What each release policy costs the user and leaves the server (Fashion-MNIST).

Trains one vicious pair (F, G) (CPU-sized WRN-10-1) unless --run names one, then,
for every release policy applied to F's outputs before they leave the device,
prints the accuracy kept and the reconstruction risk R (principal subspace, 90 %
of the variance) and PSNR of

* (a) the vicious decoder G as trained, fed the released vectors;
* (b) the adaptive server: G fine-tuned on released outputs of its own training
  images (policy applied afresh each batch), then fed the released test vectors.

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
from vicious.defences.release_evaluation import evaluate_policy, observed_outputs
from vicious.release.outputs import observed_form
from vicious.release.policies import parse_policy
from vicious.runs.evaluation import fit_statistics
from vicious.runs.files import atomic_write_json
from vicious.runs.layout import open_run
from vicious.runs.training import train_run

POLICIES = [
    "none", "top-1", "top-3", "label-only", "round-1", "round-2", "temperature-3",
    "gaussian-0.02", "gaussian-0.1", "laplace-0.02", "laplace-0.1",
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
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--retrain-epochs", type=int, default=2, help="adaptive server's fine-tuning epochs")
    parser.add_argument("--policies", nargs="*", default=POLICIES)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    policies = [parse_policy(p) for p in args.policies]
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
    test_images, labels = run.splits.test.float_images(), run.splits.test.labels
    train_images = run.splits.train.float_images()
    test = (observed_outputs(run.classifier, test_images, form), test_images, labels)
    train = (observed_outputs(run.classifier, train_images, form), train_images)

    rows = []
    for policy in policies:
        t0 = time.perf_counter()
        result = evaluate_policy(policy, run.decoder, form, test=test, train=train, statistics=statistics,
                                 retrain_epochs=args.retrain_epochs, loss=run.config.loss, seed=0)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(result)
        print(f"{policy.name:15} accuracy {result['accuracy']:.3f}  trained R {result['trained']['r_principal']:.3f}  "
              f"retrained R {result['retrained']['r_principal']:.3f}  ({result['seconds']:.0f}s)", flush=True)

    print(f"\nRelease policies on a vicious Fashion-MNIST pair ({run.config.output} outputs, WRN-{run.config.model.depth}-"
          f"{run.config.model.width}, {run.config.data.image_size} px, {len(test_images)} test images); "
          "R = reconstruction risk on the principal subspace (90 % variance), PSNR of the mean MSE")
    print(f"{'policy':15} {'accuracy':>8} {'R trained G':>12} {'PSNR trained':>13} {'R retrained G':>14} {'PSNR retrained':>15}")
    for r in rows:
        print(f"{r['policy']:15} {r['accuracy']:8.3f} {r['trained']['r_principal']:12.3f} {r['trained']['psnr']:13.2f} "
              f"{r['retrained']['r_principal']:14.3f} {r['retrained']['psnr']:15.2f}")
    results = {"run": str(run_dir), "output": run.config.output, "image_size": run.config.data.image_size,
               "train_images": len(train_images), "test_images": len(test_images),
               "retrain_epochs": args.retrain_epochs, "policies": rows, "seconds": round(time.perf_counter() - started, 1)}
    path = Path(args.json) if args.json else out / "bench_release_policies.json"
    atomic_write_json(path, results)
    print(f"\nresults: {path}  ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
