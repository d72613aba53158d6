"""Wall time of ``vicious demo``, the first thing a new user runs.

    python benchmarks/bench_demo.py [--json out.json] [--keep DIR] [--set KEY=VALUE ...]

Runs ``vicious demo --quiet`` in a temporary folder (or --keep DIR) as a separate
process, so the figure includes start-up and data loading as a user sees them.
Reports the wall time, the CPU time, the training time of each run (from its
training.json), the demo's own table and the load average before and after: on a
shared machine other jobs' load inflates the wall time many times over (and the CPU
time too, oversubscribed threads spin).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vicious.experiments.files import atomic_write_json


def vicious_command() -> list[str]:
    script = shutil.which("vicious", path=str(Path(sys.executable).parent)) or shutil.which("vicious")
    return [script] if script else [sys.executable, "-c", "import sys; from vicious.cli import main; sys.exit(main())"]


def run_demo(out: Path, overrides: list[str]) -> dict:
    command = vicious_command() + ["demo", "--out", str(out), "--quiet"]
    for override in overrides:
        command += ["--set", override]
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode:
        raise SystemExit(f"vicious demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    runs = {}
    for training in sorted(out.glob("*/training.json")):
        runs[training.parent.name] = json.loads(training.read_text()).get("train_seconds")
    return {
        "benchmark": "demo",
        "command": " ".join(command[1:]),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "train_seconds": runs,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "output": done.stdout,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, default=None, help="write the demo here instead of a temporary folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to vicious demo")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.keep:
        result = run_demo(args.keep, args.set)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = run_demo(Path(folder) / "demo", args.set)
    print(result["output"].rstrip())
    print(f"\n{'what':<28} {'seconds':>8}")
    print(f"{'vicious demo, wall':<28} {result['wall_seconds']:>8.1f}")
    print(f"{'vicious demo, CPU time':<28} {result['cpu_seconds']:>8.1f}")
    for run, seconds in result["train_seconds"].items():
        print(f"{'  training ' + run:<28} {seconds:>8.1f}")
    print(f"{os.cpu_count()} CPUs, load average {result['load_average_before']} -> {result['load_average_after']}")
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
