"""Time batched augmentation (vicious.data.augment) against the original per-image loop.

    python benchmarks/bench_augmentation.py [--device cuda] [--batch 250]
        [--channels 1 3] [--size 32] [--repeats 20] [--json out.json]

For each channel count, times one augmented copy of a batch of random images with:
  reference   torchvision's own transforms, image by image (benchmarks/reference_augmentation.py)
  dense       augment_batch, all 7 transforms on the whole batch, torch.where per image
  grouped     augment_batch, each transform on the images that drew it
  auto        augment_batch's default for the device (grouped on CPU, dense elsewhere)
Reports the median over --repeats runs (after a warm-up), images per second and the
speed-up over the reference; prints a table and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from reference_augmentation import build_aug_set, reference_augment  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from vicious.data.augment import augment_batch  # noqa: E402
from vicious.runs.files import atomic_write_json  # noqa: E402


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() over ``repeats`` runs, after one warm-up run."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference-repeats", type=int, default=5, help="the per-image loop is slow")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    # A generator on the device: no host-device traffic for the random draws.
    generator = torch.Generator(device=device).manual_seed(0)
    chooser = T.RandomChoice(build_aug_set(args.size))

    rows = []
    for channels in args.channels:
        images = torch.rand(args.batch, channels, args.size, args.size, device=device)
        methods = {
            "reference": (lambda images=images: reference_augment(images, chooser), args.reference_repeats),
            "dense": (lambda images=images: augment_batch(images, generator=generator, strategy="dense"), args.repeats),
            "grouped": (lambda images=images: augment_batch(images, generator=generator, strategy="grouped"), args.repeats),
            "auto": (lambda images=images: augment_batch(images, generator=generator), args.repeats),
        }
        seconds = {name: median_seconds(fn, device, repeats) for name, (fn, repeats) in methods.items()}
        for name, s in seconds.items():
            rows.append(
                {
                    "channels": channels,
                    "method": name,
                    "ms_per_batch": 1e3 * s,
                    "images_per_s": args.batch / s,
                    "speedup_vs_reference": seconds["reference"] / s,
                }
            )

    print(f"device {device}, batch {args.batch}, {args.size}x{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'C':>2} {'method':<10} {'ms/batch':>10} {'images/s':>12} {'x reference':>12}")
    for row in rows:
        print(
            f"{row['channels']:>2} {row['method']:<10} {row['ms_per_batch']:>10.2f} "
            f"{row['images_per_s']:>12.0f} {row['speedup_vs_reference']:>12.1f}"
        )

    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": args.size,
        "repeats": args.repeats,
        "reference_repeats": args.reference_repeats,
        "rows": rows,
    }
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
