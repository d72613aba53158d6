"""``vicious audit`` and ``vicious calibrate`` (discovered by :mod:`vicious.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_audit(args) -> None:
    from vicious.defences.audit import run_audit
    from vicious.defences.sandbox import SandboxLimits

    out = Path(args.out) if args.out else Path(f"audit-{Path(args.model).name.split('.')[0] or 'model'}")
    limits = SandboxLimits(wall_s=args.time_limit, cpu_s=args.cpu_limit, memory_bytes=args.memory_limit)
    run_audit(
        Path(args.model), args.data, out, image_size=args.image_size, data_root=args.data_root, form=args.form,
        calibration_file=Path(args.calibration) if args.calibration else None, allow_calibrate=args.calibrate,
        limits=limits, unconfined=args.unconfined_model_code, task=args.task,
    )


def _cmd_calibrate(args) -> None:
    from vicious.defences.audit import is_own_images
    from vicious.defences.calibration import calibrate, calibrate_own_images, describe
    from vicious.defences.suite import make_settings

    settings = make_settings(num_images=args.num_images, shadow_epochs=args.shadow_epochs)
    out = Path(args.out) if args.out else None
    if is_own_images(args.data):
        calibration, path = calibrate_own_images(Path(args.data), settings=settings, image_size=args.image_size,
                                                 num_classes=args.num_classes, out=out)
    else:
        calibration, path = calibrate(args.data, settings=settings, train_limit=args.train_limit,
                                      image_size=args.image_size, data_root=args.data_root, out=out)
    for name, thresholds in calibration.thresholds.items():
        print(f"{name:18} {describe(thresholds)}")
    if calibration.false_positives:
        fp = calibration.false_positives
        print(f"leave one out: {fp.overall['likely-vicious']} of {fp.num_references} honest references called "
              f"likely-vicious, {fp.overall['inconclusive']} inconclusive")
    print(f"calibration saved to {path} ({calibration.seconds:.0f} s)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes from '8G', '512M', '4GiB', '1.5G' (binary units) or a plain number of bytes."""
    number, unit = text.strip(), ""
    for suffix in ("iB", "B"):
        number = number.removesuffix(suffix)
    if number[-1:].upper() in _UNITS:
        number, unit = number[:-1], number[-1].upper()
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = 0.0
    if not (1 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a size such as 8G or 512M, got {text!r}")
    return int(value)


# Defaults of vicious.defences.calibration and of vicious.defences.sandbox.SandboxLimits,
# repeated so that building the parser imports no torch (a test checks they agree).
REFERENCE_IMAGES = 5000
TIME_LIMIT_S, CPU_LIMIT_S, MEMORY_LIMIT = 120.0, 3600.0, 8 << 30


def register(subparsers) -> None:
    audit = subparsers.add_parser(
        "audit", help="check a classifier (TorchScript, ONNX or run directory) for vicious outputs",
        description="Score a classifier with every detector on the dataset's test images and compare with honest "
                    "reference classifiers; writes audit.json and audit.html.",
    )
    audit.add_argument("model", help="a TorchScript file (.pt), an ONNX file (.onnx), a run directory or its classifier.safetensors")
    audit.add_argument("--data", required=True,
                       help="the dataset the classifier was trained for (e.g. fashion-mnist), or your own images: a "
                            "folder of class folders, a folder of images (unlabelled) or an .npz")
    audit.add_argument("--task", choices=["multiclass", "multilabel"], default="multiclass",
                       help="on your own images: one class per image (softmax) or independent attributes (sigmoid); "
                            "logits do not show which (default multiclass)")
    audit.add_argument("--out", help="output folder (default: audit-<model name>)")
    audit.add_argument("--image-size", type=_positive, default=32,
                       help="side S of the model's input images (default 32; an ONNX model's declared size wins "
                            "on your own images)")
    audit.add_argument("--data-root", help="folder holding the dataset")
    audit.add_argument("--form", choices=["logits", "probabilities"], help="what the model outputs (default: detected)")
    audit.add_argument("--calibration", help="a calibration file (default: the cache's calibration/<dataset>.json, "
                                             "else the one shipped for the dataset)")
    audit.add_argument("--calibrate", action="store_true",
                       help="train the honest reference zoo first if the cache holds no calibration")
    limits = audit.add_argument_group(
        "model sandbox", "The model is loaded and run in a worker process confined by bubblewrap (no network, reads "
                         "only its own file and the libraries, writes nowhere) within these limits.")
    limits.add_argument("--time-limit", type=_seconds, default=TIME_LIMIT_S, metavar="SECONDS",
                        help=f"wall time to load the model, and for each batch of 500 images (default {TIME_LIMIT_S:g})")
    limits.add_argument("--cpu-limit", type=_seconds, default=CPU_LIMIT_S, metavar="SECONDS",
                        help=f"CPU time of the model over the whole audit, all threads (default {CPU_LIMIT_S:g})")
    limits.add_argument("--memory-limit", type=_size, default=MEMORY_LIMIT, metavar="SIZE",
                        help="address space of the model's process, e.g. 8G or 512M; torch alone takes ~3.3G "
                             f"(default {MEMORY_LIMIT >> 30}G)")
    limits.add_argument("--unconfined-model-code", action="store_true",
                        help="where bubblewrap is not available, run a TorchScript model anyway, with the limits only: "
                             "its code can then read and write whatever you can")
    audit.set_defaults(func=_cmd_audit)

    cal = subparsers.add_parser(
        "calibrate", help="train the honest reference zoo and save the audit's thresholds",
        description="Train the honest reference zoo (8 small classifiers: WideResNet, plain CNN, ResNet and MLP, "
                    "varied recipes; minutes on a CPU), score them with every detector and save the thresholds "
                    "under the cache directory (VICIOUS_CACHE or ~/.cache/vicious), or to --out.",
    )
    cal.add_argument("--data", required=True,
                     help="a dataset name (e.g. fashion-mnist), or your own labelled images: a folder of class "
                          "folders or an .npz with labels (the zoo trains on two thirds, scores on the rest)")
    cal.add_argument("--num-classes", type=_positive, help="on your own images: K, if the labels do not show them all")
    cal.add_argument("--train-limit", type=_positive, default=REFERENCE_IMAGES,
                     help=f"training images per reference (default {REFERENCE_IMAGES})")
    cal.add_argument("--out", help="write the calibration here instead of the cache")
    cal.add_argument("--num-images", type=_positive, default=2000, help="test images every audit scores on (default 2000)")
    cal.add_argument("--shadow-epochs", type=_positive, default=30, help="epochs of each shadow decoder (default 30)")
    cal.add_argument("--image-size", type=_positive, default=32)
    cal.add_argument("--data-root", help="folder holding the dataset")
    cal.set_defaults(func=_cmd_calibrate)
