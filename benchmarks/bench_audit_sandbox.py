"""What the audit's sandbox costs: wall time of one audit, sandboxed vs in-process.

    python benchmarks/bench_audit_sandbox.py [--repeats 3] [--num-images 3000] [--json out.json]

Builds a WRN-10-1 Fashion-MNIST classifier (untrained: the cost does not depend on its
weights), exports it as TorchScript and ONNX, and audits each with a fixed calibration
(no reference training) twice: as ``vicious audit`` runs it (one bubblewrap worker per
audit, with limits) and with the model loaded in this process (``trusted``, as the audit
ran before the sandbox). Prints the median of ``--repeats`` audits of each and the
difference, the sandbox's overhead per audit. Needs a working ``bwrap``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

from vicious.defences import SuiteSettings
from vicious.defences import audit as audit_module
from vicious.defences.black_box import open_classifier
from vicious.defences.calibration import Calibration, Reference
from vicious.defences.sandbox import find_bwrap
from vicious.models import create_model

HONEST = {"output_statistics": {"logit_norm": [1.9, 2.1, 2.0]},
          "sensitivity": {"within_class_contrast": [4.0, 4.4, 4.2]},
          "excess_leakage": {"psnr_gap": [1.5, 1.8, 1.6]}}


def export(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    model = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10,
                         mean=(0.3,), std=(0.3,)).eval()
    paths = {"TorchScript": folder / "model.pt", "ONNX": folder / "model.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.rand(2, 1, 32, 32)).save(str(paths["TorchScript"]))
        torch.onnx.export(model, (torch.rand(4, 1, 32, 32),), str(paths["ONNX"]), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return paths


def timed_audit(model: Path, calibration: Path, out: Path, trusted: bool) -> float:
    def opener(*args, **kwargs):
        return open_classifier(*args, **{**kwargs, "trusted": trusted})

    started = time.perf_counter()
    with mock.patch.object(audit_module, "open_classifier", opener):
        audit_module.run_audit(model, "fashion-mnist", out, calibration_file=calibration, echo=lambda _: None)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-images", type=int, default=3000, help="test images each audit scores")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    bwrap, why = find_bwrap()
    if bwrap is None:
        print(f"no working bubblewrap ({why}); install it (apt install bubblewrap) to measure the sandbox")
        return 2
    settings = SuiteSettings(num_images=args.num_images, sensitivity_images=min(500, args.num_images),
                             shadow_epochs=2, shadow_hidden=16)
    refs = [Reference(name=f"honest-{i}", accuracy=0.8) for i in range(3)]
    load = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calibration = folder / "calibration.json"
        Calibration.from_scores("fashion-mnist", 32, settings, HONEST, refs).save(calibration)
        for name, model in export(folder).items():
            timed_audit(model, calibration, folder / "warm", trusted=True)  # data cache and imports warm
            times = {mode: [timed_audit(model, calibration, folder / f"{mode}{i}", trusted=(mode == "in-process"))
                            for i in range(args.repeats)] for mode in ("in-process", "sandboxed")}
            results[name] = {mode: statistics.median(t) for mode, t in times.items()}
            results[name]["runs"] = times
    print(f"{torch.get_num_threads()} threads, {args.num_images} test images per audit, median of {args.repeats}; "
          f"load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'model':12} {'in-process s':>13} {'sandboxed s':>12} {'overhead s':>11}")
    for name, r in results.items():
        print(f"{name:12} {r['in-process']:13.2f} {r['sandboxed']:12.2f} {r['sandboxed'] - r['in-process']:11.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "audit_sandbox", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
