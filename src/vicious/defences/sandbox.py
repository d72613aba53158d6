"""Running an untrusted model confined: a worker process under bubblewrap, with limits.

A model under audit is code (TorchScript) or a program for a runtime (ONNX) written by
a server that may be hostile. It is loaded and run in one worker process per audit,
``python -I`` running :mod:`vicious.defences.sandbox_worker`, reused for every batch:

* **Filesystem and network** (where bubblewrap works): the worker sees read-only only
  ``/usr`` (and the ``/bin``, ``/lib*`` links of a merged-usr system), the Python
  installation and the folders holding the packages it imports, and the model file at
  ``/model/<name>``; ``/tmp`` is an empty tmpfs and its working directory; ``/proc`` and
  ``/dev`` are its own. No ``/etc``, no home, no other folder of the user's; no network,
  no IPC, its own PID namespace and session (no terminal), no capabilities, and it dies
  with the audit (``--unshare-all --die-with-parent --new-session --cap-drop ALL``).
* **Resources**, set in the child before it executes anything (``resource.setrlimit``):
  address space (``memory_bytes``), CPU seconds over its life (``cpu_s``), no file
  growth at all (``RLIMIT_FSIZE`` 0), a few open files and processes, no core dumps; the
  parent kills it when loading the model or answering one batch takes longer than
  ``wall_s`` of wall time. An empty environment, an empty working directory.
* **Its replies are data**: JSON headers and raw tensor bytes
  (:mod:`vicious.defences.sandbox_protocol`), never pickles; every size, shape and dtype
  is checked before the parent allocates anything.

Where no working bubblewrap is found (``bwrap`` on PATH, or ``VICIOUS_BWRAP``; ``none``
there means "pretend there is none", for tests), the worker still runs with the resource
limits, but unconfined on the filesystem: callers refuse TorchScript then unless told
otherwise (:func:`vicious.defences.black_box.open_classifier`).

A limit that is hit, a worker that dies or breaks the protocol: :class:`SandboxError`, a
ValueError whose message is one complete line for the user.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vicious.defences.sandbox_protocol import (
    DTYPES,
    HEADER_LIMIT,
    LENGTH,
    frame,
    itemsize,
    tensor_bytes,
)
from vicious.files import format_bytes

GiB = 1 << 30
MODEL_DIR = "/model"  # where the sandboxed worker sees the model's files
# No classifier gives more; a reply announcing more is refused before it is read.
MAX_VALUES_PER_IMAGE = 100_000
MAX_REPLY_BYTES = 1 * GiB
# The packages the worker imports; the folders holding them are made visible to it.
_WORKER_PACKAGES = ("vicious", "torch", "numpy", "onnxruntime", "safetensors", "lightning")
# Environment the worker keeps: what changes its numbers (thread counts, the CPU kernels).
_NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                "MKL_CBWR", "DNNL_MAX_CPU_ISA")
# What the worker's stderr holds when an allocation (or mapping a library) hit RLIMIT_AS.
_MEMORY_HINTS = ("bad_alloc", "MemoryError", "can't allocate memory", "Cannot allocate memory", "out of memory",
                 "failed to map segment")


@dataclass(frozen=True)
class SandboxLimits:
    """What a model under audit may use (defaults sized for a CPU audit; see the README).

    wall_s: seconds of wall time to load the model, and again for each batch (at most
        500 images); WRN-28-10 takes ~35 s per batch of 3×32×32 images on 2 cores.
    cpu_s: CPU seconds (all threads) over the whole audit (``RLIMIT_CPU``).
    memory_bytes: address space of the worker (``RLIMIT_AS``): torch alone maps ~3.3 GB,
        a WRN-28-10 batch peaks at ~5.2 GB. Also caps a TorchScript archive's unpacked size.
    startup_s: seconds for the worker to import its libraries (this project's code,
        before any of the model's runs).
    """

    wall_s: float = 120.0
    cpu_s: float = 3600.0
    memory_bytes: int = 8 * GiB
    open_files: int = 256
    processes: int = 4096
    startup_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_bytes", "open_files", "processes", "startup_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"sandbox limit {name} must be a positive number, got {value!r}")


class SandboxError(ValueError):
    """The model was stopped (a limit, a crash, a broken reply); the message is complete."""


class ModelError(ValueError):
    """The model itself raised an error (on loading or on a batch); the message is its first line."""


def printable(text: str, limit: int = 300) -> str:
    """Text from the model, safe to print on one line: no control characters, bounded."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(text.split())[:limit]


# -- finding a working bubblewrap ---------------------------------------------------------


def find_bwrap() -> tuple[str | None, str]:
    """(path of a working ``bwrap``, "") or (None, why there is none), probed once per path."""
    configured = os.environ.get("VICIOUS_BWRAP")
    if configured is not None and configured.strip().lower() in ("", "none"):
        return None, "VICIOUS_BWRAP is set to none"
    candidate = configured or shutil.which("bwrap")
    if not candidate:
        return None, "bubblewrap (bwrap) is not installed"
    reason = _probe(candidate)
    return (None, reason) if reason else (candidate, "")


@functools.cache
def _probe(bwrap: str) -> str:
    """Why ``bwrap`` cannot build the sandbox here ("" if it can): run ``true`` in one."""
    true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
    try:
        result = subprocess.run([bwrap, *_namespace_args(), *_system_binds(), "--", true],
                                capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{bwrap} does not run: {printable(err, 200)}"
    if result.returncode != 0:
        detail = printable(result.stderr.decode(errors="replace"), 200) or f"exit status {result.returncode}"
        return f"{bwrap} cannot create a sandbox here ({detail})"
    return ""


def _namespace_args() -> list[str]:
    return ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp", "--clearenv"]


def _system_binds() -> list[str]:
    """/usr read-only, and /bin, /lib* as the host has them (links into /usr on merged-usr)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


@functools.cache
def _python_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(folders to show the worker read-only, the worker's import path).

    The Python installation (prefixes, the real executable's folder), its site-packages,
    and the folders holding the packages the worker imports (an editable install's
    ``src``); the import path is this process's, less what is not visible (the current
    folder, test folders)."""
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)), *site.getsitepackages()}
    if site.ENABLE_USER_SITE and site.getusersitepackages() in sys.path:
        wanted.add(site.getusersitepackages())
    for name in _WORKER_PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            wanted.add(os.path.dirname(os.path.realpath(location)))
    dirs = sorted({os.path.realpath(d) for d in wanted if d and os.path.isdir(d)})
    binds = tuple(d for d in dirs if not _within(d, "/usr") and not any(_within(d, o) for o in dirs if o != d))
    visible = ("/usr", *binds)
    cwd = os.getcwd()
    path = tuple(p for p in (os.path.realpath(p) for p in sys.path if p)
                 if p != cwd and os.path.isdir(p) and any(_within(p, v) for v in visible))
    return binds, path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# -- the worker -----------------------------------------------------------------------------


def _rlimits(limits: SandboxLimits) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) for the child, never above this process's own hard limits."""
    cpu = math.ceil(limits.cpu_s)
    wanted = [
        (resource.RLIMIT_AS, int(limits.memory_bytes), int(limits.memory_bytes)),
        (resource.RLIMIT_CPU, cpu, cpu + 5),  # SIGXCPU at the limit, SIGKILL 5 s later
        (resource.RLIMIT_FSIZE, 0, 0),  # nothing it opens can grow: it writes no file
        (resource.RLIMIT_NOFILE, int(limits.open_files), int(limits.open_files)),
        (resource.RLIMIT_NPROC, int(limits.processes), int(limits.processes)),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    out = []
    for which, soft, hard in wanted:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            hard = min(hard, current)
        out.append((which, (min(soft, hard), hard)))
    return out


def _environment(home: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
           # glibc reserves 64 MiB of address space per malloc arena, up to 8 per core: a
           # few arenas keep RLIMIT_AS a limit on memory rather than on the core count.
           "MALLOC_ARENA_MAX": "4", "PYTHONWARNINGS": "ignore"}
    env.update({k: os.environ[k] for k in _NUMERIC_ENV if k in os.environ})
    return env


# tempfile.tempdir set: finding one writes a probe file, which RLIMIT_FSIZE 0 refuses
# (some libraries ask for it at import); a file made there stays empty anyway.
_BOOT = ("import sys, tempfile; sys.path[:] = {path!r}; tempfile.tempdir = {tmp!r}; "
         "from vicious.defences.sandbox_worker import main; sys.exit(main())")


class _Worker:
    """The process and its pipes; kept apart from ModelProcess so a finalizer can end it."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: str, limits: SandboxLimits) -> None:
        self.workdir = workdir
        pairs = _rlimits(limits)

        def confine() -> None:  # in the child, before exec: as little as possible
            for which, values in pairs:
                resource.setrlimit(which, values)

        # preexec_fn runs between fork and exec, where other threads' locks may be held:
        # confine() only calls setrlimit on values computed above, allocating nothing new.
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, cwd=workdir,
            env=env, start_new_session=True, preexec_fn=confine, close_fds=True,  # noqa: PLW1509
        )
        os.set_blocking(self.process.stdin.fileno(), False)
        self.stderr_tail = bytearray()
        self._drain = threading.Thread(target=self._keep_tail, daemon=True)
        self._drain.start()

    def _keep_tail(self) -> None:
        """Read the worker's stderr (the model may print anything, any amount); keep the last 8 KiB."""
        stream = self.process.stderr
        while chunk := stream.read(65536):
            self.stderr_tail += chunk
            del self.stderr_tail[:-8192]

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # bwrap and, by --die-with-parent, the sandbox
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._drain.join(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


class ModelProcess:
    """A model loaded in its own confined worker; ``predict`` is a ``BlackBox.predict``.

    request: what to load: ``{"kind": "torchscript" | "onnx" | "run", ...}`` (see
        :mod:`vicious.defences.model_formats`).
    model_file: the file to load (a run's: its classifier weights), seen as
        ``/model/<name>`` inside the sandbox.
    extra_files: ``{relative name: path}``: other files the model may read (an ONNX
        model's external data), seen as ``/model/<relative name>``.
    source: the model, as messages name it ("TorchScript model m.pt").
    bwrap: a working bubblewrap, or None to run with the resource limits only.
    meta: what the loader reported (checked by the caller).
    """

    def __init__(self, request: dict[str, Any], model_file: Path, name: str, source: str, limits: SandboxLimits,
                 bwrap: str | None, extra_files: dict[str, Path] | None = None) -> None:
        self.source, self.limits, self.confined = source, limits, bwrap is not None
        self._lock = threading.Lock()
        binds, import_path = _python_dirs()
        workdir = tempfile.mkdtemp(prefix="vicious-model-")
        boot = _BOOT.format(path=list(import_path), tmp="/tmp" if bwrap else workdir)
        python = [sys.executable, "-I", "-c", boot]
        real = str(Path(model_file).resolve())
        if bwrap:
            inside = f"{MODEL_DIR}/{name}"
            argv = [bwrap, *_namespace_args(), *_system_binds()]
            for d in binds:
                argv += ["--ro-bind", d, d]
            argv += ["--ro-bind", real, inside]
            for relative, path in (extra_files or {}).items():
                argv += ["--ro-bind", str(Path(path).resolve()), f"{MODEL_DIR}/{relative}"]
            for key, value in _environment("/tmp").items():
                argv += ["--setenv", key, value]
            argv += ["--", *python]
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        else:
            # As given (not resolved): ONNX Runtime looks for external data next to this path,
            # where the caller checked it.
            inside, (argv, env) = str(Path(model_file).absolute()), (python, _environment(workdir))
        self._paths = {inside: str(model_file)}
        if bwrap:  # the files' names in messages: the user's, not the sandbox's
            self._paths.update({f"{MODEL_DIR}/{r}": str(p) for r, p in (extra_files or {}).items()})
        try:
            self._worker = _Worker(argv, env, workdir, limits)
        except OSError as err:
            shutil.rmtree(workdir, ignore_errors=True)
            raise SandboxError(f"could not start the model worker: {printable(err)}") from None
        self._finalizer = weakref.finalize(self, self._worker.kill)
        try:
            self._send({**request, "op": "load", "path": inside, "threads": torch.get_num_threads()},
                       b"", time.monotonic() + limits.startup_s, "starting")
            started, _ = self._receive(time.monotonic() + limits.startup_s, "starting")
            if started.get("op") != "started":
                self._broken("did not start")
            reply, _ = self._receive(time.monotonic() + limits.wall_s, "loading")
            self._check_failure(reply, "loading")
            meta = reply.get("meta")
            if not isinstance(meta, dict):
                self._broken("sent no description of the model")
            self.meta: dict[str, Any] = meta
        except BaseException:
            self.close()
            raise

    # -- the BlackBox side ----------------------------------------------------------------

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for float32 images ``(n, C, S, S)``, as the model returned them (any
        floating or integer dtype, any shape with at most ``MAX_VALUES_PER_IMAGE`` values
        per image); raises ModelError for the model's own error, SandboxError when stopped."""
        images = images.detach().to("cpu", torch.float32).contiguous()
        n = max(1, len(images))
        with self._lock:
            if not self._finalizer.alive:
                raise SandboxError(f"{self.source}: its worker was already closed")
            step = "on one batch"
            deadline = time.monotonic() + self.limits.wall_s
            self._send({"op": "predict", "shape": list(images.shape)}, tensor_bytes(images), deadline, step)
            header, payload = self._receive(deadline, step, max_values=n * MAX_VALUES_PER_IMAGE)
        self._check_failure(header, step)
        if "shape" not in header:
            self._broken("sent no outputs")
        shape, dtype = header["shape"], DTYPES[header["dtype"]]
        if not payload:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(payload, dtype=dtype).view(shape)

    def close(self) -> None:
        """End the worker (it holds nothing worth saving) and remove its working folder."""
        self._finalizer()

    # -- frames ---------------------------------------------------------------------------

    def _send(self, header: dict[str, Any], payload: Any, deadline: float, step: str) -> None:
        fd = self._worker.process.stdin.fileno()
        for piece in frame(header, payload):
            view, done = memoryview(piece).cast("B"), 0
            while done < len(view):
                self._wait(fd, select.POLLOUT, deadline, step)
                try:
                    done += os.write(fd, view[done : done + (1 << 20)])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self._ended(step)

    def _receive(self, deadline: float, step: str, *, max_values: int = 0) -> tuple[dict[str, Any], bytearray]:
        """One frame, checked: a JSON object header of bounded size and, for a tensor, a
        shape, dtype and byte count that agree and fit the bounds, before reading the data."""
        (length,) = LENGTH.unpack(self._read(LENGTH.size, deadline, step))
        if length > HEADER_LIMIT:
            self._broken(f"announced a header of {length} bytes")
        try:
            header = json.loads(bytes(self._read(length, deadline, step)))
        except (ValueError, RecursionError):  # RecursionError: nested 64 KiB deep
            self._broken("sent a header that is not JSON")
        if not isinstance(header, dict) or not _is_count(header.get("nbytes")):
            self._broken("sent a header without a byte count")
        nbytes = header["nbytes"]
        if header.get("ok") is True and "shape" in header:
            shape, dtype = header.get("shape"), header.get("dtype")
            if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_count(d) for d in shape)):
                self._broken("sent outputs without a valid shape")
            if dtype not in DTYPES:
                self._broken("sent outputs of an unknown type")
            count = math.prod(shape)
            if count > max_values or count * itemsize(dtype) > MAX_REPLY_BYTES:
                raise self._stop(SandboxError(
                    f"{self.source} returned outputs of shape {tuple(shape)}, more than any classifier gives "
                    f"(at most {MAX_VALUES_PER_IMAGE} values per image); it is broken or hostile"))
            if nbytes != count * itemsize(dtype):
                self._broken("sent a tensor whose size does not match its shape")
        elif nbytes:
            self._broken("sent data it was not asked for")
        return header, self._read(nbytes, deadline, step) if nbytes else bytearray()

    def _read(self, n: int, deadline: float, step: str) -> bytearray:
        stream = self._worker.process.stdout
        buffer = bytearray(n)
        view, done = memoryview(buffer), 0
        while done < n:
            self._wait(stream.fileno(), select.POLLIN, deadline, step)
            got = stream.readinto(view[done:])
            if not got:
                self._ended(step)
            done += got
        return buffer

    def _wait(self, fd: int, event: int, deadline: float, step: str) -> None:
        poller = select.poll()
        poller.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(step)
            if poller.poll(min(remaining, 1.0) * 1000):
                return
            if self._worker.process.poll() is not None and event == select.POLLOUT:
                self._ended(step)

    # -- what went wrong ------------------------------------------------------------------

    def _check_failure(self, header: dict[str, Any], step: str) -> None:
        if header.get("ok") is True:
            return
        kind, message = header.get("kind"), self._text(header.get("message", ""))
        if kind == "memory":
            self._memory(step)
        if kind == "dtype":
            dtype = printable(header.get("dtype", "?"), 40)
            raise self._stop(SandboxError(
                f"{self.source} returns {dtype} outputs; a classifier returns floating-point logits or "
                "probabilities, so it is not scored"))
        if header.get("ok") is False and kind == "error":
            raise ModelError(message or "an error without a message")
        self._broken("sent a reply it was not asked for")

    def _text(self, text: Any) -> str:
        """The worker's message with the sandbox's paths replaced by the user's."""
        text = printable(text)
        for inner, outer in self._paths.items():
            text = text.replace(inner, outer)
        return text

    def _stop(self, err: Exception) -> Exception:
        self.close()
        return err

    def _timed_out(self, step: str) -> None:
        if step == "starting":
            raise self._stop(SandboxError(
                f"the worker for {self.source} did not start within {self.limits.startup_s:g} s (importing "
                "its libraries, before any of the model's code); the machine may be overloaded"))
        raise self._stop(SandboxError(
            f"{self.source} exceeded {self.limits.wall_s:g} s (wall time) {'loading' if step == 'loading' else step}; "
            "raise --time-limit if it is legitimately slow"))

    def _memory(self, step: str) -> None:
        raise self._stop(SandboxError(
            f"{self.source} tried to use more than {format_bytes(self.limits.memory_bytes)} of memory "
            f"({'loading' if step == 'loading' else step}); raise --memory-limit if it is legitimately large"))

    def _ended(self, step: str) -> None:
        """The worker closed its pipe: it died (a limit, a crash) or exited."""
        process = self._worker.process
        try:
            status = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        tail = bytes(self._worker.stderr_tail).decode(errors="replace")
        self.close()
        # Under bubblewrap a signal's death reads as 128 + the signal number.
        signum = -status if status is not None and status < 0 else (
            status - 128 if self.confined and status is not None and 128 < status < 160 else None)
        if signum == signal.SIGXCPU:
            raise SandboxError(
                f"{self.source} used more than {self.limits.cpu_s:g} s of CPU time; raise --cpu-limit "
                "if it is legitimately slow")
        if any(hint in tail for hint in _MEMORY_HINTS):
            if step == "starting":
                raise SandboxError(
                    f"the worker for {self.source} could not even import its libraries within the memory limit of "
                    f"{format_bytes(self.limits.memory_bytes)} (torch alone maps ~3.3 GB); raise --memory-limit")
            self._memory(step)
        try:
            how = f"signal {signal.Signals(signum).name}" if signum else f"exit status {status}"
        except ValueError:
            how = f"exit status {status}"
        if step == "starting":  # before any of the model's code: this project's or the machine's fault
            last = printable(_last_line(tail), 200)
            raise SandboxError(f"the worker for {self.source} could not start ({how}){f': {last}' if last else ''}")
        during = "while loading" if step == "loading" else "on a batch"
        raise SandboxError(f"{self.source}: its worker process ended ({how}) {during}; the model is broken or hostile")

    def _broken(self, what: str) -> None:
        raise self._stop(SandboxError(f"{self.source}: its worker {what}; the model is broken or hostile"))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 62)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[-1]) if lines else ""
