"""Grids of runs: expand a grid file into cells, run the missing ones, record each cell's fate.

A grid file (YAML) names presets and the axes to cross::

    name: small
    preset: fashion-mnist-{regime}-small   # one name or a list; {field}s are filled from `vary`
    set:                                   # config overrides for every cell
      train.epochs: 3
    vary:                                  # axes, crossed in this order
      regime: [honest, vicious, autoencoder]   # fills {regime} in the preset name
      output: [raw, softmax]                   # any other axis is a dotted config key
      seed: {range: [1, 3]}                    # 1, 2 (Python's range); also {linspace: [a, b, n]}
      release:                                 # values that are mappings set several keys at once
        - {policy: none}
        - {policy: topk, k: 1}                 # release.policy=topk, release.k=1
    resources: {num_cpus: 1, num_gpus: 0}  # asked for by each cell (ray executor)

A cell is one run directory ``OUT/<cell name>``: ``train_run`` then ``evaluate_run``.
The name is the preset's plus the cell's config-key axis values, sorted by key
(``fashion-mnist-vicious-small__output=softmax__seed=2``), so it is the same on every
machine and every rerun; a name with characters unsafe in file names, or longer than
``MAX_NAME``, is shortened and ends in a hash of the full name. A cell is *finished*
when its ``metrics.json`` exists: a rerun skips it, and resumes the others from their
last checkpoint. Each cell's ``status.json`` (written atomically) says ``running``,
``done`` or ``failed`` (with the error and traceback); a failed cell does not stop
the others. A sweep holds OUT's lock and each cell's run its folder's
(``vicious.runs.locks``): a second sweep on OUT is refused, and ``--dry-run``
tells a cell that is running from one whose process was killed (``interrupted``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import socket
import string
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vicious.config.presets import get_preset
from vicious.config.schema import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_differences,
    flatten_config,
    format_validation_error,
    parse_override,
    read_yaml_mapping,
)
from vicious.runs.files import atomic_write_json, atomic_write_text, read_json, refuse_outside_links
from vicious.runs.locks import FolderInUseError, describe_holder, folder_lock, holder
from vicious.runs.results import METRICS_FILE, RunResult

STATUS_FILE = "status.json"
SWEEP_FILE = "sweep.json"
GRID_COPY = "grid.yaml"
MAX_NAME = 120
#: Most cells one grid may have; its size is computed from the axes' lengths before anything is expanded.
MAX_CELLS = 10_000


class Resources(BaseModel):
    """What one cell asks of a Ray cluster (fractions share a GPU between cells)."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float = Field(1, gt=0, description="CPU cores per cell; also its torch threads")
    num_gpus: float = Field(0, ge=0, description="GPUs per cell; 0.25 runs four cells on one GPU")


class Grid(BaseModel):
    """A grid file, validated (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = None
    description: str | None = None
    preset: str | list[str]
    fixed: dict[str, Any] = Field(default_factory=dict, alias="set")
    vary: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Resources()


@dataclass(frozen=True)
class Cell:
    """One point of a grid: a preset, the axis values that name it, and its resolved config."""

    name: str
    preset: str
    axes: dict[str, Any] = field(hash=False)  # every axis value, preset fields included
    config: RunConfig = field(hash=False)


def load_grid(path: Path) -> Grid:
    """Read and validate a grid file; errors name the file and the key."""
    path = Path(path)
    values = read_yaml_mapping(path, "grid file", "must hold a mapping with at least 'preset' (see grids/small.yaml)")
    try:
        return Grid.model_validate(values)
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation_error(err, 'grid')}") from None


def _axis_kind(name: str, spec: dict) -> tuple[str, list]:
    """A ``{range: ...}`` or ``{linspace: ...}`` axis as (kind, finite numbers)."""
    if len(spec) != 1 or next(iter(spec)) not in ("range", "linspace"):
        raise ConfigError(f"axis '{name}': a mapping must be {{range: [start, stop, step]}} or "
                          f"{{linspace: [start, stop, num]}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"axis '{name}': {kind} takes a list of numbers, got {args!r}")
    if any(isinstance(a, float) and not math.isfinite(a) for a in args):
        raise ConfigError(f"axis '{name}': {kind} takes finite numbers, got {args!r}; give the values as a list")
    if kind == "range" and (not 1 <= len(args) <= 3 or (len(args) == 3 and args[2] == 0)):
        raise ConfigError(f"axis '{name}': range takes [stop], [start, stop] or [start, stop, step != 0]")
    if kind == "linspace" and (len(args) != 3 or not isinstance(args[2], int) or args[2] < 1):
        raise ConfigError(f"axis '{name}': linspace takes [start, stop, num] with num a positive integer")
    return kind, args


def _range_bounds(args: list) -> tuple:
    return {1: (0, args[0], 1), 2: (*args, 1), 3: tuple(args)}[len(args)]


def range_length(start: float, stop: float, step: float) -> int | float:
    """How many values ``range`` gives (Python's rule, also for floats), by arithmetic; ``inf``
    where the count is beyond a float."""
    if all(isinstance(a, int) for a in (start, stop, step)):
        return max(0, (stop - start + step - (1 if step > 0 else -1)) // step)
    try:
        return max(0, math.ceil((stop - start) / step - 1e-9))
    except OverflowError:  # the quotient is beyond a float (or an int beyond a float's range)
        return math.inf


def axis_length(name: str, spec: Any) -> int | float:
    """How many values ``axis_values(name, spec)`` gives, computed without building them."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"axis '{name}' is an empty list; give at least one value")
        return len(spec)
    if not isinstance(spec, dict):
        return 1
    kind, args = _axis_kind(name, spec)
    count = range_length(*_range_bounds(args)) if kind == "range" else args[2]
    if not count:
        raise ConfigError(f"axis '{name}': {kind} {args} is empty")
    return count


def _count_text(count: int | float) -> str:
    return f"{count:,}" if count < 10**15 else f"about {float(count):.1e}" if count < 1e308 else "more than 1e308"


def check_grid_size(num_presets: int, lengths: dict[str, int | float]) -> int:
    """The number of cells of a grid (presets × axis lengths); refused above ``MAX_CELLS``."""
    count = math.prod([num_presets, *lengths.values()])
    if count > MAX_CELLS:
        factors = [f"{num_presets} preset{'s' if num_presets > 1 else ''}",
                   *(f"{_count_text(n)} values of {name}" for name, n in lengths.items())]
        raise ConfigError(f"the grid has {_count_text(count)} cells ({' x '.join(factors)}), more than the "
                          f"{MAX_CELLS:,} one sweep takes; split it into several grid files with fewer values per "
                          "axis (e.g. a range of seeds each) and sweep them one after another")
    return count


def axis_values(name: str, spec: Any) -> list:
    """An axis as a list: a list as is, one scalar, ``{range: [start, stop, step]}`` or ``{linspace: [a, b, n]}``."""
    count = axis_length(name, spec)  # validates; nothing is built for an axis that is too long
    if isinstance(spec, list):
        return spec
    if not isinstance(spec, dict):
        return [spec]
    check_grid_size(1, {name: count})
    kind, args = _axis_kind(name, spec)
    if kind == "range":
        if all(isinstance(a, int) for a in args):
            return list(range(*args))
        start, _, step = _range_bounds(args)
        return [round(start + i * step, 12) for i in range(count)]
    start, stop, num = args
    return [start] if num == 1 else [round(start + (stop - start) * i / (num - 1), 12) for i in range(num)]


def _fields(template: str) -> set[str]:
    try:
        parsed = [(f, spec, conversion) for _, f, spec, conversion in string.Formatter().parse(template)
                  if f is not None]
    except ValueError as err:
        raise ConfigError(f"preset {template!r}: {err}") from None
    # Only plain {name}s: a format spec such as {seed:>999999999} would build a gigabyte of name.
    if any(spec or conversion or not f.isidentifier() for f, spec, conversion in parsed):
        raise ConfigError(f"preset {template!r}: write its fields as {{axis}}, an axis name without "
                          "conversions, format specs, indices or attributes")
    return {f for f, _, _ in parsed}


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def cell_name(preset: str, overrides: dict[str, Any]) -> str:
    """``preset__key=value__...`` (keys sorted), safe as a file name, at most ``MAX_NAME`` characters."""
    name = "__".join([preset, *(f"{k}={format_value(v)}" for k, v in sorted(overrides.items()))])
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "-", name)
    if safe != name or len(safe) > MAX_NAME or safe.startswith("."):
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        safe = f"{safe.lstrip('.')[: MAX_NAME - 11]}-{digest}"
    return safe


def expand_grid(grid: Grid, overrides: Sequence[str] | dict[str, Any] = ()) -> list[Cell]:
    """Every cell of ``grid``, configs validated; ``overrides`` (``key=value``) apply to all of them last."""
    extra = dict(parse_override(o) for o in overrides) if not isinstance(overrides, dict) else dict(overrides)
    templates = [grid.preset] if isinstance(grid.preset, str) else list(grid.preset)
    if not templates:
        raise ConfigError("the grid's 'preset' list is empty; name at least one preset")
    preset_fields = set().union(*(_fields(t) for t in templates))
    missing = preset_fields - set(grid.vary)
    if missing:
        raise ConfigError(f"preset names {{{sorted(missing)[0]}}} but 'vary' has no such axis; add it to 'vary'")
    check_grid_size(len(templates), {name: axis_length(name, spec) for name, spec in grid.vary.items()})
    axes = {name: axis_values(name, spec) for name, spec in grid.vary.items()}
    cells: dict[str, Cell] = {}
    for template in templates:
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo))
            preset = template.format(**{k: format_value(v) for k, v in point.items() if k in preset_fields})
            # A mapping value sets each of its keys: {release: {policy: topk, k: 1}} -> release.policy, release.k.
            config_axes = flatten_config({k: v for k, v in point.items() if k not in preset_fields})
            name = cell_name(preset, config_axes)
            try:
                config = apply_overrides(get_preset(preset), {**grid.fixed, **config_axes, **extra,
                                                               "train.progress": False})
            except ConfigError as err:
                hint = ("; an axis that is no config key must fill a {field} of the preset name"
                        if "unknown config key" in str(err) else "")
                raise ConfigError(f"grid cell {name}: {err}{hint}") from None
            if name in cells:
                raise ConfigError(f"the grid yields cell {name} twice; an axis repeats a value, or a preset "
                                  "name lacks an axis' {field}")
            cells[name] = Cell(name, preset, point, config)
    return list(cells.values())


# --- the state of a cell on disk ---------------------------------------------------------------


def read_status(run_dir: Path) -> dict:
    """A cell's status.json, or {} where there is none (or it cannot be read)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = read_json(path, what="cell status")
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / METRICS_FILE).is_file()


def cell_state(run_dir: Path) -> str:
    """``finished``, ``running`` (a process holds the cell's lock), ``interrupted`` (its status
    says running but no process holds it: it was killed), ``failed`` or ``new``."""
    if is_finished(run_dir):
        return "finished"
    if holder(run_dir) is not None:
        return "running"
    state = read_status(run_dir).get("state", "new")
    return "interrupted" if state == "running" else state


def check_existing(cells: Iterable[Cell], out: Path) -> None:
    """Refuse a sweep whose cells would resume or skip runs trained with another config."""
    clashes = []
    for cell in cells:
        saved_path = Path(out) / cell.name / "config.yaml"
        if saved_path.is_file():
            saved = read_yaml_mapping(saved_path, "cell config", "does not hold a config mapping; delete "
                                      f"{saved_path.parent} to retrain that cell")
            differences = config_differences(saved, cell.config.model_dump(), "grid")
            if differences:
                clashes.append(f"{cell.name} ({'; '.join(differences[:2])})")
    if clashes:
        raise ConfigError(f"{out} holds runs with other configs than the grid's: {', '.join(clashes[:3])}; "
                          "choose another --out, or delete those cells to retrain them")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def failed_status(cell: Cell, out: Path, error: BaseException | str, trace: str = "") -> dict:
    """Record a cell that failed outside ``run_cell`` (a worker that died); returns the status."""
    status = {**read_status(Path(out) / cell.name), "cell": cell.name, "preset": cell.preset, "axes": cell.axes,
              "state": "failed", "error": error if isinstance(error, str) else f"{type(error).__name__}: {error}",
              "traceback": trace, "finished": _now()}
    try:
        atomic_write_json(Path(out) / cell.name / STATUS_FILE, status)
    except OSError:
        pass  # the driver may not see the workers' file system; the summary still records it
    return status


def run_cell(cell: Cell, out: Path | str, threads: int | None = None) -> dict:
    """Train and evaluate one cell into ``out/<name>``, resuming a partial run; returns its status.

    Any error of the run is caught and recorded (state ``failed``, error, traceback);
    only an unwritable ``out`` or an interrupt propagates.
    """
    run_dir = Path(out) / cell.name
    try:
        with folder_lock(run_dir):  # one writer per cell folder, in whichever worker process runs it
            return _run_locked_cell(cell, run_dir, threads)
    except FolderInUseError as err:  # another process writes it: record nothing there
        return {"cell": cell.name, "preset": cell.preset, "axes": cell.axes, "state": "failed",
                "error": f"{type(err).__name__}: {err}", "finished": _now()}


def _run_locked_cell(cell: Cell, run_dir: Path, threads: int | None) -> dict:
    import torch

    from vicious.runs.evaluation import evaluate_run
    from vicious.runs.training import train_run

    status = {"cell": cell.name, "preset": cell.preset, "axes": cell.axes, "state": "running",
              "attempt": read_status(run_dir).get("attempt", 0) + 1, "started": _now(),
              "host": socket.gethostname(), "pid": os.getpid()}
    atomic_write_json(run_dir / STATUS_FILE, status)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        if threads:
            torch.set_num_threads(threads)
        train_run(cell.config, run_dir, resume=(run_dir / "config.yaml").exists())
        metrics = evaluate_run(run_dir)
    except Exception as err:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        status.update(state="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    else:
        result = RunResult.model_validate(metrics)
        status.update(state="done", results={
            "accuracy": result.accuracy, "ssim": result.ssim, "psnr": result.psnr,
            "risk_principal": result.risk.principal.mean, "risk_exact": result.risk.exact.mean,
        })
    # CPU seconds (all threads) beside wall seconds: on a shared machine the wall time says little.
    status.update(finished=_now(), seconds=round(time.perf_counter() - started, 2),
                  cpu_seconds=round(time.process_time() - cpu_started, 2))
    atomic_write_json(run_dir / STATUS_FILE, status)
    return status


# --- a sweep ---------------------------------------------------------------------------------


class Executor(Protocol):
    def describe(self) -> str: ...

    def run(self, cells: Sequence[Cell], out: Path) -> Iterator[dict]:
        """Run every cell, yielding each one's status as it ends (in any order)."""
        ...


def describe_status(status: dict) -> str:
    seconds = status.get("seconds")
    took = f" in {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
    if status.get("state") == "done":
        r = status["results"]
        return (f"done{took}: accuracy {r['accuracy']:.3f}, SSIM {r['ssim']:.3f}, "
                f"R principal {r['risk_principal']:.3f}")
    return f"{status.get('state', 'failed')}{took}: {status.get('error', '')}"


def run_sweep(grid: Grid, out: Path, executor: Executor, *, overrides: Sequence[str] = (),
              dry_run: bool = False, echo=print) -> dict:
    """Run the grid's unfinished cells into ``out``; returns (and writes to sweep.json) a summary."""
    out = Path(out)
    cells = expand_grid(grid, overrides)
    if dry_run:  # reads only: no lock
        return _sweep(grid, cells, out, executor, dry_run, echo)
    with folder_lock(out):  # one sweep per folder (each cell's run also locks its own)
        refuse_outside_links(out)
        return _sweep(grid, cells, out, executor, dry_run, echo)


def _sweep(grid: Grid, cells: list[Cell], out: Path, executor: Executor, dry_run: bool, echo) -> dict:
    check_existing(cells, out)
    done = {c.name for c in cells if is_finished(out / c.name)}
    finished, todo = [c for c in cells if c.name in done], [c for c in cells if c.name not in done]
    echo(f"{len(cells)} cells: {len(finished)} finished (skipped), {len(todo)} to run"
         + ("" if dry_run else f" ({executor.describe()})"))
    if dry_run:
        if (record := holder(out)) is not None:
            echo(f"  (a sweep is running in {out}: {describe_holder(record)})")
        for cell in cells:
            echo(f"  {cell_state(out / cell.name):11} {cell.name}")
        return {"cells": [c.name for c in cells], "skipped": [c.name for c in finished], "ran": {}}
    atomic_write_text(out / GRID_COPY, yaml.safe_dump(grid.model_dump(by_alias=True, exclude_none=True),
                                                      sort_keys=False))
    started, ran = time.perf_counter(), {}
    for i, status in enumerate(executor.run(todo, out), 1):
        ran[status["cell"]] = status.get("state", "failed")
        echo(f"[{i}/{len(todo)}] {status['cell']}: {describe_status(status)}")
    summary = {"grid": grid.name, "finished_at": _now(), "seconds": round(time.perf_counter() - started, 1),
               "executor": executor.describe(), "cells": [c.name for c in cells],
               "skipped": [c.name for c in finished], "ran": ran,
               "failed": sorted(name for name, state in ran.items() if state != "done")}
    atomic_write_json(out / SWEEP_FILE, summary)
    return summary
