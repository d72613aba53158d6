"""The GPU benchmark, in one command: paper-size training throughput, an epoch, the risk at scale.

    python benchmarks/bench_gpu.py [--json bench_gpu.json] [--skip-compile] [--peak-tflops 989]
    python benchmarks/bench_gpu.py --smoke          # a quick check of the script itself, also on a CPU

Sized to finish in under 8 minutes on one H200 (the compiled variant's compilation is
the largest part). Sections, each written to the JSON as soon as it is done (a failing
section records its error and the others still run):

  step    the vicious step of the paper-size pair (WRN-28-5 F and G, batch 250 of
          32x32x3, augmentation on), forward, backward and Adam, in turns:
          reference (per-image torchvision augmentation) vs ours (batched, on the
          device), each in float32 and bf16 autocast; then ours bf16 + channels-last,
          and + torch.compile of both networks. images/s, FLOPs of the step counted by
          FlopCounterMode, TFLOP/s and the fraction of --peak-tflops (H200 bf16 dense
          989; the fraction is of that bf16 peak for every row).
  syncs   host-device synchronisations in 10 steps of ours bf16 + channels-last,
          counted with torch.cuda.set_sync_debug_mode("warn"), with where they happen.
  epoch   one epoch of CIFAR-10-sized synthetic data (45,000 train and 5,000 validation
          images of 32x32x3) through the real training path (train_run, Lightning,
          data on the device, bf16-mixed, channels-last; validation included).
  risk    ImageStatistics.fit and reconstruction_risk of 10,000 images on the GPU, for
          32x32x3 (50,000 images; also vs a pseudo-inverse per call) and 64x64x3
          (D = 12,288; 20,000 images).

Needs the vicious package and its dependencies (``pip install -e .`` in the checkout,
or PYTHONPATH=src).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import bench_risk  # noqa: E402
from bench_training_throughput import (  # noqa: E402
    Variant,
    build_module,
    environment,
    make_step,
    measure,
    print_table,
    synchronize,
)

from vicious.attack.batches import TensorImageDataset  # noqa: E402
from vicious.runs.files import atomic_write_json  # noqa: E402


def step_section(args, device, peak) -> list[dict]:
    variants = [
        Variant("reference fp32", "reference", "32"),
        Variant("ours fp32", "ours", "32"),
        Variant("reference bf16", "reference", "bf16"),
        Variant("ours bf16", "ours", "bf16"),
        Variant("ours bf16 channels-last", "ours", "bf16", channels_last=True),
    ]
    settings = dict(device=device, batch=args.batch, channels=3, size=32, warmup=args.warmup, steps=args.steps,
                    rounds=args.rounds, peak_flops=peak)
    rows = measure(args.model, variants, **settings)
    print_table(rows)
    if not args.skip_compile:
        # Apart, so that a compiler failure keeps the rows above; eager again beside it, in turns.
        try:
            compiled = measure(args.model, [variants[-1], Variant("ours bf16 cl compiled", "ours", "bf16",
                                                                  channels_last=True, compile=True)], **settings)
            print_table(compiled)
            rows += compiled
        except Exception:
            rows.append({"name": "ours bf16 cl compiled", "error": traceback.format_exc()})
            print(rows[-1]["error"], file=sys.stderr)
    return rows


@contextlib.contextmanager
def counting_syncs(device: torch.device):
    """Record a warning at every host-device synchronisation (CUDA; elsewhere records nothing)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")


def syncs_section(args, device) -> dict:
    if device.type != "cuda" and not args.smoke:
        return {"skipped": "needs CUDA"}
    variant = Variant("ours bf16 channels-last", "ours", "bf16", channels_last=True)
    module = build_module(args.model, variant, channels=3, size=32, device=device)
    images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    dataset = TensorImageDataset(images.to(device), (torch.arange(1000) % 10).to(device))
    step = make_step(module, dataset, variant, args.batch, device, 32)
    for i in range(3):
        step(i)
    synchronize(device)
    steps = 10
    with counting_syncs(device) as caught:
        for i in range(steps):
            step(3 + i)  # steps 3..12: the NaN check (every 50 steps) is not among them
    result = {"step": _count_syncs(caught, steps)}
    print(f"host-device synchronisations in {steps} bare steps: {result['step']}")
    # The same through Lightning's loop (train_run): 16 steps, then validation and checkpoints.
    from vicious.runs.training import train_run

    config = one_epoch_config(args, device)
    splits = synthetic_splits(16 * args.batch, 100 if args.smoke else 1000, 10)
    with tempfile.TemporaryDirectory() as folder, counting_syncs(device) as caught:
        train_run(config, Path(folder) / "run", splits=splits)
    result["train_run_16_steps"] = _count_syncs(caught, 16)
    print(f"... in train_run, 16 steps + validation + checkpoints: {result['train_run_16_steps']}")
    return result


def _count_syncs(caught, steps: int) -> dict:
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return {"steps": steps, "syncs": len(syncs), "syncs_per_step": len(syncs) / steps,
            "where": dict(where.most_common(12))}


def one_epoch_config(args, device):
    """cifar10-vicious for one epoch, bf16 and channels-last, at the benchmark's batch size."""
    from vicious.config.presets import get_preset
    from vicious.config.schema import apply_overrides

    overrides = ["train.epochs=1", "train.progress=false", "train.precision=bf16-mixed", "train.channels_last=true",
                 f"train.batch_size={args.batch}", f"train.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
                 "train.devices=1"]
    if args.smoke:
        overrides += ["model.depth=10", "model.width=1"]
    return apply_overrides(get_preset("cifar10-vicious"), overrides)


def synthetic_splits(train: int, val: int, test: int, channels: int = 3, size: int = 32):
    from vicious.data import DatasetSplits, Split
    from vicious.data.types import DatasetInfo

    generator = torch.Generator().manual_seed(0)

    def split(n):
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 10, (n,), generator=generator))

    info = DatasetInfo.multiclass("cifar10", [f"class{k}" for k in range(10)], channels)
    return DatasetSplits(info, split(train), split(val), split(test), mean=(0.5,) * channels,
                         std=(0.29,) * channels)


def epoch_section(args, device) -> dict:
    from vicious.runs.training import train_run

    train, val = (45_000, 5_000) if not args.smoke else (400, 100)
    config = one_epoch_config(args, device)
    splits = synthetic_splits(train, val, 10)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = train_run(config, Path(folder) / "run", splits=splits)
        wall = time.perf_counter() - started
        summary = json.loads((run / "training.json").read_text())
    result = {"train_images": train, "val_images": val, "batch": args.batch,
              "model": f"WRN-{config.model.depth}-{config.model.width}", "precision": config.train.precision,
              "wall_seconds": wall, "train_seconds": summary.get("train_seconds")}
    print(f"one epoch of {train} + validation of {val} images: {wall:.1f} s wall "
          f"({summary.get('train_seconds')} s in train_run's phases)")
    return result


def risk_section(args, device) -> list[dict]:
    cases = [(32, 50_000, False), (64, 20_000, True)] if not args.smoke else [(8, 500, False)]
    results = []
    for size, train, skip_direct in cases:
        ns = argparse.Namespace(size=size, channels=3, train=train, test=10_000 if not args.smoke else 200,
                                device=str(device), threads=None, skip_direct=skip_direct)
        result = bench_risk.benchmark(ns)
        bench_risk.print_table(result)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H200: 989)")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--sections", nargs="+", default=["step", "syncs", "epoch", "risk"],
                        choices=["step", "syncs", "epoch", "risk"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device: this benchmark is for a GPU (use --smoke to check the script on a CPU)")
    args.model = "small" if args.smoke else "paper"
    args.batch = 8 if args.smoke else 250
    args.warmup, args.steps, args.rounds = (1, 1, 1) if args.smoke else (3, 10, 3)
    if args.smoke:
        args.skip_compile = True

    result = {"benchmark": "gpu", "smoke": args.smoke, "environment": environment(device),
              "torch_cuda": torch.version.cuda, "peak_tflops": args.peak_tflops}
    sections = {"step": lambda: step_section(args, device, args.peak_tflops * 1e12),
                "syncs": lambda: syncs_section(args, device),
                "epoch": lambda: epoch_section(args, device),
                "risk": lambda: risk_section(args, device)}
    for name in args.sections:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            result[name] = sections[name]()
        except Exception:  # keep what the other sections measure
            result[name] = {"error": traceback.format_exc()}
            print(result[name]["error"], file=sys.stderr)
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
        atomic_write_json(args.json, result)
    print(f"sections took {result['section_seconds']} s; wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
