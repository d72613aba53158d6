"""Training throughput of the vicious step: the float32 baseline vs the automatic path,
and batched augmentation vs the per-image original.

    python benchmarks/bench_training_throughput.py [--device cpu|cuda] [--models small mnist paper]
        [--batch 128] [--paper-batch N] [--channels 1] [--size 32] [--compare auto|augmentation]
        [--compile] [--warmup 1] [--steps 2] [--rounds 3] [--json out.json]

``--compare auto`` (the default) times, side by side:

  float32     the step as it ran before train.precision=auto: float32, NCHW, Adam's
              per-tensor (foreach) update
  auto        what train.precision=auto and train.channels_last=auto choose on this
              machine (vicious.runs.hardware), with the fused Adam training uses

for WRN-10-1 (the CPU presets), WRN-28-1 (the paper's MNIST model) and WRN-28-5 (the
paper's model, batch 16 on a CPU), each with the ratio auto / float32.

``--compare augmentation`` times the augmentation variants instead:

The vicious step (both comparisons) is one optimiser step of AttackModule's ``joint`` phase, as training
runs it: gather a batch of uint8 images from the dataset tensors (held on the device),
convert, append one augmented copy per image, F and G forward, the objective,
backward, Adam. Variants, measured side by side in one run:

  ours        vicious.data.augment: the whole batch at once, on the device (what training uses)
  reference   the original experiments' loop: torchvision's transforms image by image
              (benchmarks/reference_augmentation.py) swapped in for the batched call;
              everything else identical
  none        no augmentation: the networks alone on half as many images (an upper bound)

They are timed in turns (round-robin over --rounds rounds of --steps steps each, the
median round reported), so a machine shared with other work slows them alike; the
load average is recorded with the figures. Models: small = WRN-10-1 (the CPU presets),
paper = WRN-28-5 (docs/method.md, "Architectures"). images/s counts the batch's originals, so an epoch of N
images takes N / (images/s) seconds; the networks process twice as many. FLOPs of one
step (F and G, forward and backward, and the augmentation's convolutions) are counted
once with torch.utils.flop_counter.FlopCounterMode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from reference_augmentation import build_aug_set, reference_augment  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import vicious.attack.lightning_module as lightning_module  # noqa: E402
from vicious.attack.batches import TensorImageDataset  # noqa: E402
from vicious.attack.lightning_module import AttackModule  # noqa: E402
from vicious.config.schema import LossConfig, TrainConfig  # noqa: E402
from vicious.models import create_model  # noqa: E402
from vicious.runs.files import atomic_write_json  # noqa: E402
from vicious.runs.hardware import numeric_plan  # noqa: E402

MODELS = {"small": (10, 1), "mnist": (28, 1), "paper": (28, 5)}  # (depth, width)

warnings.filterwarnings("ignore", r"You are trying to `self.log\(\)`")  # steps run here without a Trainer


@dataclass(frozen=True)
class Variant:
    name: str
    augmentation: str = "ours"  # "ours" | "reference" | "none"
    precision: str = "32"  # "32" | "bf16" (autocast around the forward pass, as Lightning's bf16-mixed)
    channels_last: bool = False
    compile: bool = False
    fused_adam: bool = False


def environment(device: torch.device) -> dict:
    """What a reader needs to weigh the figures: the machine and how busy it was."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def augmentation(kind: str, size: int):
    """Swap the per-image reference in for the batched augmentation, for this block only."""
    if kind != "reference":
        yield
        return
    chooser = T.RandomChoice(build_aug_set(size))

    def reference_copies(images, labels, generator=None):
        return torch.cat([images, reference_augment(images, chooser)]), torch.cat([labels, labels])

    original = lightning_module.with_augmented_copies
    lightning_module.with_augmented_copies = reference_copies
    try:
        yield
    finally:
        lightning_module.with_augmented_copies = original


def build_module(model: str, variant: Variant, *, channels: int, size: int, device: torch.device) -> AttackModule:
    depth, width = MODELS[model]
    torch.manual_seed(1)
    classifier = create_model("wrn-classifier", depth=depth, width=width, in_channels=channels, num_outputs=10,
                              mean=(0.5,) * channels, std=(0.25,) * channels)
    decoder = create_model("wrn-decoder", depth=depth, width=width, out_channels=channels, num_inputs=10,
                           image_size=size, input_form="raw", task="multiclass")
    module = AttackModule(
        classifier, decoder, phase="joint", loss=LossConfig(), lr=1e-3, seed=1,
        augment=variant.augmentation != "none", channels_last=variant.channels_last,
        nan_check_every=1 if device.type == "cpu" else 50,  # as training.py
    ).to(device)
    if variant.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if variant.compile:
        classifier.compile()  # as training.py: the networks, in place
        decoder.compile()
    return module


def make_step(module: AttackModule, dataset: TensorImageDataset, variant: Variant, batch: int,
              device: torch.device, size: int):
    """One training step (index -> None), on data already on the device."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1e-3, fused=variant.fused_adam)
    indices = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        images, labels = dataset.__getitems__(torch.randint(len(dataset), (batch,), generator=indices).tolist())
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if variant.precision == "bf16"
                    else contextlib.nullcontext())
        with augmentation(variant.augmentation, size), autocast:
            loss = module.training_step((images, labels), i)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step(0)
    return int(counter.get_total_flops())


def measure(model: str, variants: list[Variant], *, device: torch.device, batch: int, channels: int = 3,
            size: int = 32, warmup: int = 1, steps: int = 2, rounds: int = 3, peak_flops: float | None = None,
            log=print) -> list[dict]:
    """Time ``variants`` of the vicious step in turns; one row per variant."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(4 * batch, 1000), channels, size, size), dtype=torch.uint8,
                           generator=generator)
    dataset = TensorImageDataset(images.to(device), (torch.arange(len(images)) % 10).to(device))
    steps_by_variant, flops = {}, {}
    for variant in variants:
        module = build_module(model, variant, channels=channels, size=size, device=device)
        step = make_step(module, dataset, variant, batch, device, size)
        if not variant.compile and variant.augmentation not in flops:  # the same arithmetic
            flops[variant.augmentation] = count_flops(step)
        started = time.perf_counter()
        for i in range(warmup):
            step(i)
        synchronize(device)
        log(f"  {model} {variant.name}: warm-up {time.perf_counter() - started:.1f} s")
        steps_by_variant[variant] = step
    seconds: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant, step in steps_by_variant.items():
            synchronize(device)
            started = time.perf_counter()
            for i in range(steps):
                step(warmup + i)
            synchronize(device)
            seconds[variant].append((time.perf_counter() - started) / steps)
    depth, width = MODELS[model]
    reference = next((v for v in variants if v.augmentation == "reference" or v.name == "float32"), None)
    rows = []
    for variant in variants:
        per_step = statistics.median(seconds[variant])
        step_flops = flops.get(variant.augmentation)
        row = {
            "model": f"WRN-{depth}-{width}", "batch": batch, "image": f"{size}x{size}x{channels}",
            **asdict(variant), "ms_per_step": 1e3 * per_step, "images_per_s": batch / per_step,
            "rounds_ms": [round(1e3 * s, 2) for s in seconds[variant]],
            "speedup_vs_reference": statistics.median(seconds[reference]) / per_step if reference else None,
            "flops_per_step": step_flops,
            "tflops_per_s": step_flops / per_step / 1e12 if step_flops else None,
        }
        if peak_flops and step_flops:
            row["fraction_of_peak"] = step_flops / per_step / peak_flops
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<9} {'variant':<22} {'batch':>5} {'ms/step':>10} {'images/s':>9} {'x base':>6} "
          f"{'TFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        speedup = f"{r['speedup_vs_reference']:.2f}" if r["speedup_vs_reference"] else "-"
        tflops = f"{r['tflops_per_s']:.3f}" if r["tflops_per_s"] else "-"
        peak = f"{r['fraction_of_peak']:.1%}" if r.get("fraction_of_peak") else "-"
        print(f"{r['model']:<9} {r['name']:<22} {r['batch']:>5} {r['ms_per_step']:>10.1f} "
              f"{r['images_per_s']:>9.1f} {speedup:>6} {tflops:>8} {peak:>8}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None,
                        help="default: small, mnist and paper")
    parser.add_argument("--batch", type=int, default=128, help="originals per step (the -small presets' batch)")
    parser.add_argument("--paper-batch", type=int, default=None,
                        help="batch for the paper-size model (default: --batch on a GPU, 16 on a CPU)")
    parser.add_argument("--channels", type=int, default=1, help="1 as (Fashion-)MNIST, 3 as CIFAR")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--compare", choices=["auto", "augmentation"], default="auto")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the auto variant's networks")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default 2 on CPU, 10 on GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    models = args.models or ["small", "mnist", "paper"]
    steps = args.steps or (10 if on_gpu else 2)
    plan = numeric_plan(TrainConfig(accelerator="gpu" if on_gpu else "cpu"))
    precision = "bf16" if plan.precision == "bf16-mixed" else "32"
    result = {"benchmark": "training_throughput", "environment_before": environment(device),
              "auto_plan": plan.record(), "rows": []}
    print(f"train.precision=auto chooses {plan.precision}, channels_last={plan.channels_last} here "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()})", flush=True)
    for model in models:
        batch = args.batch if model != "paper" else (args.paper_batch or (args.batch if on_gpu else 16))
        if args.compare == "auto":
            # Augmentation on in both, as the paper presets train; the networks dominate the step.
            variants = [Variant("float32"),
                        Variant("auto", "ours", precision, plan.channels_last, args.compile, fused_adam=True)]
        else:
            variants = [Variant(kind, kind, precision, plan.channels_last, args.compile, fused_adam=True)
                        for kind in ("ours", "reference", "none")]
        print(f"{model}: batch {batch}, {len(variants)} variants, {args.rounds} rounds of {steps} steps", flush=True)
        result["rows"] += measure(model, variants, device=device, batch=batch, channels=args.channels,
                                  size=args.size, warmup=args.warmup, steps=steps, rounds=args.rounds)
    result["environment_after"] = environment(device)
    env = result["environment_before"]
    print(f"\n{env['device_name']} ({env['device']}), torch {env['torch']}, {env['torch_threads']} threads, "
          f"load average {env['load_average']} -> {result['environment_after']['load_average']}")
    print_table(result["rows"])
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
