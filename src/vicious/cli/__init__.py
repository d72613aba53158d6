"""The ``vicious`` command line.

Every command validates its input at the boundary and fails with one line,
``vicious: error: ...``, and exit status 2 (1 when training itself fails, e.g. a
non-finite loss); nothing already saved is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vicious.cli import defences as defences_cli
from vicious.cli import studies as studies_cli
from vicious.runs.logs import quiet_lightning


def _cmd_demo(args) -> None:
    from vicious.studies.demo import run_demo

    run_demo(Path(args.out), data_root=args.data_root, overrides=args.set, progress=not args.quiet)


def _train_config(args):
    """The run's config: the preset, then the config file over it, then each --set (later wins).

    A config file without --preset starts from the preset it names (its ``preset`` key), else
    from the defaults; a resumed run without either is its saved config.yaml."""
    from vicious.config.presets import get_preset
    from vicious.config.schema import apply_overrides, load_config, merge_config, read_yaml_mapping

    base = get_preset(args.preset) if args.preset else None
    if args.config:
        values = read_yaml_mapping(Path(args.config), "config file", "does not hold a config mapping")
        if base is None and isinstance(values.get("preset"), str):
            base = get_preset(values["preset"])
        config = merge_config(values, args.config, base=base)
    elif base is not None:
        config = base
    elif args.resume and args.out and (Path(args.out) / "config.yaml").exists():
        config = load_config(Path(args.out) / "config.yaml")
    else:
        raise ValueError("name a preset with --preset NAME ('vicious presets' lists them) or a file with --config")
    overrides = list(args.set)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.download:
        overrides.append("data.download=true")
    if args.quiet:
        overrides.append("train.progress=false")
    return apply_overrides(config, overrides)


def _cmd_train(args) -> None:
    from vicious.config.schema import dump_yaml

    config = _train_config(args)
    if args.print_config:  # a complete config: 'vicious train --config FILE' loads it back unchanged
        print(dump_yaml(config.model_dump()), end="")
        return
    if not args.out:
        raise ValueError("name the run folder to write with --out DIR")
    # Imported once the config is valid: a bad one is refused without loading Lightning.
    from vicious.runs.evaluation import evaluate_run
    from vicious.runs.training import is_global_zero, train_run

    run_dir = train_run(config, Path(args.out), resume=args.resume)
    if not args.no_evaluate and is_global_zero():  # under DDP, one process evaluates
        _print_metrics(evaluate_run(run_dir))


def _cmd_evaluate(args) -> None:
    from vicious.runs.evaluation import evaluate_run

    _print_metrics(evaluate_run(Path(args.run_dir)))


def _print_metrics(metrics: dict) -> None:
    from vicious.runs.results import RunResult

    r = RunResult.model_validate(metrics)
    exact, principal = r.risk.exact, r.risk.principal
    print(
        f"{r.regime} on {r.dataset} ({r.output} outputs): accuracy {r.accuracy:.4f}, MSE {r.mse:.4f}, "
        f"PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.3f}, R exact {exact.mean:.3f}, "
        f"R principal {principal.mean:.3f} (r>1: {principal.frac_above_one:.1%})"
    )


def _cmd_presets(args) -> None:
    from vicious.config.presets import PRESETS, preset_names

    names = preset_names(args.pattern)
    if not names:
        raise ValueError(f"no preset matches {args.pattern!r}; 'vicious presets' lists them all")
    if args.yaml:
        from vicious.config.schema import dump_yaml

        if len(names) != 1:
            raise ValueError(f"--yaml prints one preset; {args.pattern!r} matches {len(names)} (name one exactly)")
        print(dump_yaml(PRESETS[names[0]].config().model_dump()), end="")
        return
    if args.json:
        print(json.dumps({n: PRESETS[n].config().model_dump() for n in names}, indent=2))
        return
    width = max((len(n) for n in names), default=10)
    print(f"{'preset'.ljust(width)}  {'dataset':14} {'model':10} {'regime':12} description")
    for name in names:
        p = PRESETS[name]
        c = p.config()
        model = f"WRN-{c.model.depth}-{c.model.width}"
        print(f"{name.ljust(width)}  {p.dataset:14} {model:10} {p.regime:12} {p.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vicious",
        description="Measure, detect and blunt input reconstruction from a classifier's outputs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="train an honest and a vicious pair on Fashion-MNIST and compare them",
        description="Train an honest and a vicious classifier/decoder pair on Fashion-MNIST (the full set where "
                    "found, else the embedded subset), compare them with the label-only floor and write a table, "
                    "reconstructions and report.html (about 2 minutes on 2 CPU cores with bf16, 4 without).")
    demo.add_argument("--out", default="vicious-demo", help="output folder (default: vicious-demo)")
    demo.add_argument("--data-root", help="folder holding Fashion-MNIST (default: Debian package, else embedded)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    demo.add_argument("--quiet", action="store_true", help="no progress (no bar on a terminal, no per-epoch lines)")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train", help="train one run from a preset or a config file",
        description="Train one classifier/decoder pair from a preset or a config file into a run folder, "
                    "then evaluate it on the test split; --resume continues an interrupted run.")
    train.add_argument("--preset", help="preset name ('vicious presets' lists them)")
    train.add_argument("--config", help="a YAML file of the keys to change (over --preset, or the preset it names, "
                                        "else the defaults); a saved config.yaml holds them all")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    train.add_argument("--out", help="run directory to write (required unless --print-config)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--data-root", help="folder holding the dataset")
    train.add_argument("--download", action="store_true", help="download the dataset if missing")
    train.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation")
    train.add_argument("--print-config", action="store_true",
                       help="print the complete resolved config as YAML and exit (it loads back with --config)")
    train.add_argument("--quiet", action="store_true", help="no progress (no bar on a terminal, no per-epoch lines)")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="measure a trained run on its test split",
        description="Measure a trained run on its test split: accuracy, MSE, PSNR, SSIM, reconstruction risk R "
                    "and re-identification, beside the label-only floor; writes metrics.json and per_sample.csv.")
    evaluate.add_argument("run_dir", help="run directory written by 'vicious train'")
    evaluate.set_defaults(func=_cmd_evaluate)

    presets = sub.add_parser(
        "presets", help="list the presets",
        description="List the named configurations (dataset, model, regime), optionally filtered by a "
                    "shell-style pattern; --json prints their full configs.")
    presets.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'cifar10-*'")
    presets.add_argument("--json", action="store_true", help="print the full configs as JSON")
    presets.add_argument("--yaml", action="store_true",
                         help="print one preset's complete config as YAML (a file for 'vicious train --config')")
    presets.set_defaults(func=_cmd_presets)

    # The defences' and the studies' commands (audit, calibrate; sweep, table, report).
    defences_cli.register(sub)
    studies_cli.register(sub)
    for command in ("demo", "train", "evaluate", "sweep"):  # the commands that build networks from a config
        sub.choices[command].add_argument(
            "--allow-import", action="append", default=[], metavar="MODULE",
            help="let model.classifier / model.decoder = MODULE:callable import this module of your own (importing "
                 "runs its code, so a config alone never does)")
    return parser


def _version() -> str:
    from vicious import __version__

    return f"vicious {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_lightning()
    try:
        if getattr(args, "allow_import", None):
            from vicious.models.own import allow_import

            allow_import(args.allow_import)  # in the environment, which worker processes inherit
        args.func(args)
    except BrokenPipeError:
        # The reader went away (``vicious presets | head``): not an error of ours. Python would
        # report it again when flushing stdout at exit, so point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BaseException as err:  # noqa: BLE001 - classified below; anything unexpected is re-raised
        status = _exit_status(err)
        if status is None:
            raise
        return status
    return 0


def _exit_status(err: BaseException) -> int | None:
    """Print one line for an error a user can act on and return the exit status; None otherwise.

    Lightning's exception classes are looked up only when Lightning is loaded (no error of
    theirs can exist otherwise), so an error raised before training (a bad config, a hostile
    file) prints at once instead of after a 6-second import."""
    lightning_errors: tuple[type[BaseException], ...] = ()
    sigterm: tuple[type[BaseException], ...] = ()
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        lightning_errors, sigterm = (MisconfigurationException,), (SIGTERMException,)
    training = sys.modules.get("vicious.attack.lightning_module")
    if training is not None and isinstance(err, training.TrainingDiverged):  # the input was fine; training failed
        print(f"vicious: error: {_one_line(err)}", file=sys.stderr)
        return 1
    # ValueError covers ConfigError and UnsafeFileError, OSError the folder locks; a
    # MisconfigurationException is Lightning refusing a setting it cannot use here.
    if isinstance(err, (ValueError, OSError, *lightning_errors)):
        print(f"vicious: error: {_one_line(err)}", file=sys.stderr)
        return 2
    if isinstance(err, KeyboardInterrupt):
        print("vicious: interrupted; finished checkpoints are kept (resume with --resume)", file=sys.stderr)
        return 130
    if isinstance(err, sigterm):  # a SystemExit without a code: it would exit 0, as if finished
        print("vicious: terminated (SIGTERM); finished checkpoints are kept (resume with --resume)", file=sys.stderr)
        return 143
    return None


def _one_line(err: BaseException) -> str:
    return " ".join((str(err) or type(err).__name__).split())
