"""Where a sweep's cells run: in this process, a small process pool, or Ray.

Every executor runs ``sweep.run_cell`` on each cell and yields the cells' statuses
as they end. ``run_cell`` records a failing run itself; an executor records only what
``run_cell`` could not (a worker process that died).
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from vicious.runs.logs import quiet_lightning
from vicious.studies.sweep import Cell, Resources, failed_status, run_cell

EXECUTORS = ("local", "ray")


def available_cpus() -> int:
    """Cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Cells in order in this process (``max_parallel`` 1), or in a pool of fresh processes.

    In a pool, each worker gets ``threads`` torch threads (default: the cores shared out),
    so that N workers do not each start one thread per core.
    """

    def __init__(self, max_parallel: int = 1, threads: int | None = None) -> None:
        if max_parallel < 1:
            raise ValueError(f"--max-parallel must be at least 1, got {max_parallel}")
        self.max_parallel = max_parallel
        self.threads = threads or (max(1, available_cpus() // max_parallel) if max_parallel > 1 else None)

    def describe(self) -> str:
        return "local, in order" if self.max_parallel == 1 else f"local pool of {self.max_parallel} processes"

    def run(self, cells: Sequence[Cell], out: Path) -> Iterator[dict]:
        if self.max_parallel == 1 or len(cells) <= 1:
            for cell in cells:
                yield run_cell(cell, out, self.threads)
            return
        # spawn, not fork: a forked copy of a process that already ran torch can deadlock.
        with ProcessPoolExecutor(min(self.max_parallel, len(cells)), mp_context=get_context("spawn"),
                                 initializer=quiet_lightning) as pool:
            futures = {pool.submit(run_cell, cell, out, self.threads): cell for cell in cells}
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001 - the worker died; record it, go on
                    yield failed_status(futures[future], out, err, traceback.format_exc())


class RayExecutor:
    """Cells as Ray tasks, each asking for ``resources``; a local Ray instance unless ``address``.

    ``address`` is that of a running cluster (``ray start --head`` prints it; "auto"
    finds one on this machine); its workers need vicious installed and ``out`` on a
    file system they share with this machine. ``max_parallel`` caps the tasks in
    flight (default: as many as the cluster's resources allow).
    """

    def __init__(self, resources: Resources, *, address: str | None = None, max_parallel: int | None = None,
                 local_cpus: int | None = None) -> None:
        if max_parallel is not None and max_parallel < 1:
            raise ValueError(f"--max-parallel must be at least 1, got {max_parallel}")
        self.resources, self.address, self.max_parallel = resources, address, max_parallel
        self.local_cpus = local_cpus or available_cpus()

    def describe(self) -> str:
        where = f"Ray cluster at {self.address}" if self.address else f"local Ray with {self.local_cpus} CPUs"
        return (f"{where}; each cell asks for {self.resources.num_cpus:g} CPU, {self.resources.num_gpus:g} GPU"
                + (f", at most {self.max_parallel} at once" if self.max_parallel else ""))

    def run(self, cells: Sequence[Cell], out: Path) -> Iterator[dict]:
        if not cells:
            return
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'vicious-classifiers[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            # Ray runs workers 15 nice levels below the raylet; here the cells are the work, so they
            # keep the priority the sweep was started with (``nice vicious sweep`` still lowers it).
            options = {"address": self.address} if self.address else {
                "num_cpus": self.local_cpus, "include_dashboard": False, "_system_config": {"worker_niceness": 0}}
            from vicious.models.own import ENV_VAR

            if os.environ.get(ENV_VAR):  # the modules the user allowed (--allow-import), on every worker
                options["runtime_env"] = {"env_vars": {ENV_VAR: os.environ[ENV_VAR]}}
            # Workers' output would interleave with the sweep's; status.json keeps each cell's error.
            ray.init(**options, log_to_driver=False, logging_level="warning")
        pending: dict = {}
        try:
            self._check_fits()
            task = ray.remote(run_cell).options(
                num_cpus=self.resources.num_cpus, num_gpus=self.resources.num_gpus, max_retries=0)
            threads = max(1, math.ceil(self.resources.num_cpus))
            queue = list(cells)
            while queue or pending:
                while queue and (self.max_parallel is None or len(pending) < self.max_parallel):
                    cell = queue.pop(0)
                    pending[task.remote(cell, str(out), threads)] = cell
                [done], _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done)
                try:
                    yield ray.get(done)
                except ray.exceptions.RayError as err:  # the worker died (e.g. out of memory)
                    yield failed_status(cell, out, err, traceback.format_exc())
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()

    def _check_fits(self) -> None:
        import ray

        total = ray.cluster_resources()
        for name, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
            wanted, have = getattr(self.resources, key), total.get(name, 0)
            if wanted > have:
                raise ValueError(f"each cell asks for {wanted:g} {name} but the Ray cluster has {have:g}; "
                                 f"lower --{key.replace('_', '-')} or use a cluster that has them")


def make_executor(name: str, resources: Resources, *, max_parallel: int | None = None,
                  address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        if address:
            raise ValueError("--address is for the ray executor; add --executor ray")
        return LocalExecutor(1 if max_parallel is None else max_parallel)
    if name == "ray":
        return RayExecutor(resources, address=address, max_parallel=max_parallel)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
