"""Regenerate the calibration shipped with the package for Fashion-MNIST at 32 px.

    python scripts/make_shipped_calibration.py

Trains the honest reference zoo (vicious.defences.zoo) on the embedded default's training
images (5,000 of its 9,000) and scores it on all 2,000 of its test images, with the default
detector settings: exactly what `vicious calibrate --data fashion-mnist` does on a machine
without the full dataset. The file records the settings, the zoo, the versions of vicious and
torch, digests of the images, and the wall time. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from vicious.data.mnist import EMBEDDED_DIR
from vicious.defences.calibration import SHIPPED, calibrate

if __name__ == "__main__":
    target = SHIPPED / "fashion-mnist.json"
    calibration, _ = calibrate("fashion-mnist", data_root=str(EMBEDDED_DIR), out=target)
    # The embedded files were read through --data-root: record them by name, not by this checkout's path.
    calibration.data_source = "embedded"
    calibration.save(target)
    print(f"wrote {target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target} "
          f"({calibration.seconds:.0f} s)")
