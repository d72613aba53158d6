"""Train the three regimes on the same data and compare what each leaks.

The method (docs/method.md) expects reconstruction quality autoencoder > vicious > honest; this script
checks that R (principal) orders them the same way, and shows R exact beside it.

    python benchmarks/bench_regimes.py [--preset-size small] [--set key=value ...] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vicious.config.presets import get_preset
from vicious.config.schema import apply_overrides
from vicious.runs.evaluation import evaluate_run, fit_statistics
from vicious.runs.files import atomic_write_json
from vicious.runs.layout import load_splits, open_run
from vicious.runs.training import train_run
from vicious.studies.demo import comparison_rows, format_table

REGIMES = ("honest", "vicious", "autoencoder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="vicious-regimes-"))
    configs = {r: apply_overrides(get_preset(f"{args.dataset}-{r}-small"), args.set + ["train.progress=false"])
               for r in REGIMES}
    splits = load_splits(configs["honest"])
    statistics = fit_statistics(splits)
    results, seconds = {}, {}
    for regime, config in configs.items():
        started = time.perf_counter()
        train_run(config, out / regime, resume=(out / regime / "config.yaml").exists(), splits=splits)
        results[regime] = evaluate_run(open_run(out / regime, splits), statistics=statistics)
        seconds[regime] = round(time.perf_counter() - started, 1)
    print(format_table(comparison_rows(results)))
    principal = [results[r]["risk"]["principal"]["mean"] for r in ("autoencoder", "vicious", "honest")]
    psnr = [results[r]["psnr"] for r in ("autoencoder", "vicious", "honest")]
    ordered = principal[0] > principal[1] > principal[2]
    print(f"\nR principal orders autoencoder > vicious > honest: {ordered}  "
          f"(R principal {principal}, PSNR {[round(p, 2) for p in psnr]})")
    print(f"seconds per regime: {seconds}; runs in {out}")
    if args.json:
        atomic_write_json(Path(args.json), {"results": results, "seconds": seconds, "ordered": ordered})


if __name__ == "__main__":
    main()
