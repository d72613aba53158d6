"""Time and peak memory of the reconstruction risk R: fitted once vs a pseudo-inverse per call.

    python benchmarks/bench_risk.py [--size 32] [--channels 3] [--train 20000] [--test 10000]
        [--device cpu|cuda] [--threads N] [--skip-direct] [--json out.json]

  ours     ImageStatistics.fit once over the train+validation images (uint8, streamed in
           batches), then reconstruction_risk per call: one (2N x D)(D x k) product.
  direct   the obvious way: the covariance once (torch.cov of the float64 images), then per
           call the pseudo-inverse (torch.linalg.pinv, SVD) and the Mahalanobis quadratic
           forms of the 2N differences.

Each step runs in a fresh subprocess, so each peak is its own: peak resident memory
above the step's starting point (CPU) or torch.cuda.max_memory_allocated (GPU). The
images are synthetic but image-like (smooth random fields, correlated channels,
quantised to uint8; full-rank covariance); the reconstructions are the images plus
smooth noise. Both ways must give the same r for the exact variant (same pinv cut-off,
D * eps * lambda_max); the largest relative difference is reported.
64x64x3 (D = 12288, --size 64) needs ~4 GB for the fit and, on a CPU, tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vicious.runs.files import atomic_write_json  # noqa: E402


def synthetic_images(n: int, channels: int, size: int, seed: int, chunk: int = 2000) -> torch.Tensor:
    """(n, C, S, S) uint8 smooth random fields: decaying spectrum, correlated channels, full rank."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.arange(9, dtype=torch.float32) - 4
    kernel = torch.exp(-0.5 * (x / 1.5) ** 2)
    kernel = (kernel[:, None] * kernel[None, :] / kernel.sum() ** 2).expand(channels, 1, 9, 9)
    out = torch.empty(n, channels, size, size, dtype=torch.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        shared = torch.randn(m, 1, size, size, generator=generator)
        own = torch.randn(m, channels, size, size, generator=generator)
        field = nnf.conv2d(nnf.pad(0.8 * shared + 0.6 * own, [4] * 4, mode="reflect"), kernel, groups=channels)
        field = 0.5 + 0.25 * field / field.std() + 0.02 * torch.randn(field.shape, generator=generator)
        out[start:start + m] = (field.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


class PeakMemory:
    """Peak memory above the starting point, in MB, of the block it wraps.

    GPU: torch.cuda.max_memory_allocated. CPU: the resident set size, sampled every
    millisecond from /proc/self/statm (ru_maxrss would hide a peak lower than an
    earlier one, e.g. during imports)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, 0.0

    def _resident_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self._highest = max(self._highest, self._resident_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._start = self._highest = self._resident_mb()
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._start
        else:
            self._done.set()
            self._thread.join()
            self.peak_mb = max(self._highest, self._resident_mb()) - self._start


def worker(step: str, workdir: Path, device: torch.device) -> dict:
    """One measured step, in its own process; inputs and outputs are files in ``workdir``."""
    from vicious.metrics import ImageStatistics, reconstruction_risk

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if step == "fit":
        train = torch.load(workdir / "train.pt")
        with PeakMemory(device) as memory:
            began = time.perf_counter()
            stats = ImageStatistics.fit(train, device=device)
            sync()
            seconds = time.perf_counter() - began
        stats.save(workdir / "stats.safetensors")
        return {"seconds": seconds, "peak_mb": memory.peak_mb, "rank": stats.rank,
                "components_90": stats.components_for(0.9)}

    x = torch.load(workdir / "test.pt").float().div(255).to(device)
    x_rec = torch.load(workdir / "reconstructions.pt").to(device)
    if step in ("exact", "principal"):
        stats = ImageStatistics.load(workdir / "stats.safetensors", device=device)
        with PeakMemory(device) as memory:
            began = time.perf_counter()
            r = reconstruction_risk(x, x_rec, stats, variant=step)
            sync()
            seconds = time.perf_counter() - began
        torch.save(r.cpu(), workdir / f"r_{step}.pt")
        return {"seconds": seconds, "peak_mb": memory.peak_mb}
    if step == "cov":
        train = torch.load(workdir / "train.pt")
        with PeakMemory(device) as memory:
            began = time.perf_counter()
            flat = train.reshape(len(train), -1).to(device).double().div_(255)
            covariance = torch.cov(flat.T, correction=0)
            mean = flat.mean(dim=0)
            del flat
            sync()
            seconds = time.perf_counter() - began
        torch.save({"covariance": covariance.cpu(), "mean": mean.cpu()}, workdir / "covariance.pt")
        return {"seconds": seconds, "peak_mb": memory.peak_mb}
    if step == "direct":
        saved = torch.load(workdir / "covariance.pt")
        covariance, mean = saved["covariance"].to(device), saved["mean"].to(device)
        with PeakMemory(device) as memory:
            began = time.perf_counter()
            d = covariance.shape[0]
            inverse = torch.linalg.pinv(covariance, rtol=d * torch.finfo(torch.float64).eps)
            a, b = x.reshape(len(x), -1).double(), x_rec.reshape(len(x), -1).double()
            diffs = torch.cat([a - mean, a - b])
            squared = ((diffs @ inverse) * diffs).sum(dim=1)
            distances = squared.clamp_min(0).sqrt()
            r = distances[: len(x)] / distances[len(x):].clamp_min(1e-6)
            del inverse, a, b, diffs, squared, distances
            sync()
            seconds = time.perf_counter() - began
        torch.save(r.cpu(), workdir / "r_direct.pt")
        return {"seconds": seconds, "peak_mb": memory.peak_mb}
    raise ValueError(f"unknown step {step!r}")


def run_step(step: str, workdir: Path, args) -> dict:
    command = [sys.executable, __file__, "--worker", step, "--workdir", str(workdir), "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"step {step} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark(args) -> dict:
    from bench_training_throughput import environment

    device = torch.device(args.device)
    result = {"benchmark": "risk", "environment_before": environment(device),
              "images": f"{args.size}x{args.size}x{args.channels}", "D": args.channels * args.size ** 2,
              "train_images": args.train, "test_images": args.test}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        torch.save(synthetic_images(args.train, args.channels, args.size, seed=0), workdir / "train.pt")
        test = synthetic_images(args.test, args.channels, args.size, seed=1)
        noise = synthetic_images(args.test, args.channels, args.size, seed=2).float().div(255) - 0.5
        torch.save(test, workdir / "test.pt")
        torch.save((test.float().div(255) + 0.2 * noise).clamp(0, 1), workdir / "reconstructions.pt")
        del test, noise
        for step in ("fit", "exact", "principal") + (() if args.skip_direct else ("cov", "direct")):
            print(f"  {step} ...", flush=True)
            result[step] = run_step(step, workdir, args)
        result["R_exact"] = float(torch.load(workdir / "r_exact.pt").mean())
        result["R_principal"] = float(torch.load(workdir / "r_principal.pt").mean())
        if not args.skip_direct:
            ours, direct = torch.load(workdir / "r_exact.pt"), torch.load(workdir / "r_direct.pt")
            result["max_relative_difference_exact_r"] = float(((ours - direct).abs() / direct.abs()).max())
            result["speedup_per_call_exact"] = result["direct"]["seconds"] / result["exact"]["seconds"]
    result["environment_after"] = environment(device)
    return result


def print_table(result: dict) -> None:
    n = result["test_images"]
    print(f"\nR for {n} images of {result['images']} (D = {result['D']}), statistics of "
          f"{result['train_images']} images; {result['environment_before']['device_name']}, "
          f"load average {result['environment_before']['load_average']} -> {result['environment_after']['load_average']}")
    print(f"{'step':<48} {'seconds':>9} {'peak MB':>9}")
    rows = [("ours: ImageStatistics.fit (once)", result["fit"]),
            ("ours: reconstruction_risk exact (per call)", result["exact"]),
            ("ours: reconstruction_risk principal (per call)", result["principal"])]
    if "direct" in result:
        rows += [("direct: covariance (once)", result["cov"]),
                 ("direct: pinv + quadratic forms (per call)", result["direct"])]
    for name, r in rows:
        print(f"{name:<48} {r['seconds']:>9.2f} {r['peak_mb']:>9.0f}")
    print(f"rank {result['fit']['rank']}, principal components (90%) {result['fit']['components_90']}; "
          f"R exact {result['R_exact']:.3f}, R principal {result['R_principal']:.3f}")
    if "direct" in result:
        print(f"per-call speed-up (exact): {result['speedup_per_call_exact']:.1f}x; "
              f"largest relative difference of r: {result['max_relative_difference_exact_r']:.1e}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--train", type=int, default=20_000, help="images the statistics are fitted on")
    parser.add_argument("--test", type=int, default=10_000, help="images per risk call")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--skip-direct", action="store_true", help="only ours (the direct way is slow at D = 12288)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, torch.device(args.device))))
        return {}
    result = benchmark(args)
    print_table(result)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
