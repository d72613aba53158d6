"""The ``sweep``, ``table`` and ``report`` commands (found by ``vicious.cli``)."""

from __future__ import annotations

import sys
from pathlib import Path


def _cmd_sweep(args) -> None:
    from vicious.studies.executors import make_executor
    from vicious.studies.sweep import load_grid, run_sweep

    grid = load_grid(Path(args.grid))
    if args.num_cpus is not None and args.num_cpus <= 0:
        raise ValueError(f"--num-cpus must be positive, got {args.num_cpus:g}")
    if args.num_gpus is not None and args.num_gpus < 0:
        raise ValueError(f"--num-gpus must be 0 or more, got {args.num_gpus:g}")
    flags = {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus}
    resources = type(grid.resources)(**{**grid.resources.model_dump(),
                                        **{k: v for k, v in flags.items() if v is not None}})
    overrides = list(args.set) + ([f"data.root={args.data_root}"] if args.data_root else [])
    executor = make_executor(args.executor, resources, max_parallel=args.max_parallel, address=args.address)
    try:
        summary = run_sweep(grid, Path(args.out), executor, overrides=overrides, dry_run=args.dry_run,
                            echo=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"vicious: sweep interrupted; rerun the same command to resume (finished cells in {args.out} "
              "are skipped)", file=sys.stderr)
        raise
    if summary.get("failed"):
        first = summary["failed"][0]
        raise ValueError(f"{len(summary['failed'])} of {len(summary['ran'])} cells failed (first: {first}); "
                         f"{Path(args.out) / first / 'status.json'} holds the error; rerun the sweep to retry them")


def _cmd_table(args) -> None:
    from vicious.studies.table import FORMATS, SECTIONS, build_tables, render

    if args.format not in FORMATS:
        raise ValueError(f"unknown format {args.format!r}; choose one of {', '.join(FORMATS)}")
    text = render(build_tables(Path(args.sweep_dir)), args.format, sections=args.section or SECTIONS)
    if args.output:
        from vicious.runs.files import atomic_write_text

        atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)


def _cmd_report(args) -> None:
    from vicious.studies.report import write_report

    path = write_report(Path(args.sweep_dir), Path(args.output), num_images=args.num_images)
    print(f"wrote {path}")


def register(subparsers) -> None:
    from vicious.studies.executors import EXECUTORS
    from vicious.studies.table import FORMATS, SECTIONS

    sweep = subparsers.add_parser(
        "sweep", help="run a grid of presets and settings, skipping finished cells",
        description="Run every cell of a grid file (see grids/small.yaml) into its own run directory under "
                    "--out; finished cells are skipped, so rerunning resumes an interrupted sweep.")
    sweep.add_argument("grid", help="grid file (YAML), e.g. grids/small.yaml")
    sweep.add_argument("--out", required=True, help="sweep folder; one run directory per cell")
    sweep.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: in this process (or a process pool); ray: Ray tasks (default: local)")
    sweep.add_argument("--max-parallel", type=int, metavar="N",
                       help="cells at once (local default 1; ray default: as resources allow)")
    sweep.add_argument("--address", help="ray: address of a running Ray cluster (default: start a local one)")
    sweep.add_argument("--num-cpus", type=float, help="ray: CPUs per cell (overrides the grid's resources)")
    sweep.add_argument("--num-gpus", type=float, help="ray: GPUs per cell, fractions share a GPU")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value in every cell")
    sweep.add_argument("--data-root", help="folder holding the datasets")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells and their state; run nothing")
    sweep.set_defaults(func=_cmd_sweep)

    table = subparsers.add_parser(
        "table", help="aggregate a sweep's runs into the paper's tables",
        description="Aggregate the finished runs of a sweep folder into the paper's tables (mean ± std over seeds, "
                    "label-only rows, paired differences), as Markdown, CSV, JSON or LaTeX.")
    table.add_argument("sweep_dir", help="folder of run directories (a sweep's --out)")
    table.add_argument("--format", default="md", help=f"{' | '.join(FORMATS)} (default: md)")
    table.add_argument("--section", action="append", choices=SECTIONS,
                       help="only these tables (repeatable; csv shows the first); default: all")
    table.add_argument("-o", "--output", help="write to this file instead of printing")
    table.set_defaults(func=_cmd_table)

    report = subparsers.add_parser(
        "report", help="one self-contained HTML page of a sweep's results",
        description="Write one self-contained HTML page of a sweep: its tables, figures, reconstructions and the "
                    "config of every run.")
    report.add_argument("sweep_dir", help="folder of run directories (a sweep's --out)")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    report.add_argument("--num-images", type=int, default=8, help="test images per reconstruction grid (default 8)")
    report.set_defaults(func=_cmd_report)
