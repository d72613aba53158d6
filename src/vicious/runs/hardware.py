"""What this machine trains fastest in: the numeric precision and memory format behind ``auto``.

``train.precision=auto`` picks bf16 mixed precision where the device computes bf16
natively and float32 elsewhere:

* a CUDA GPU that supports bf16 (Ampere and newer): ``bf16-mixed``;
* a CPU whose PyTorch kernels run at AVX-512 and that has AMX tiles or AVX512-BF16
  (Intel Sapphire Rapids and newer, AMD Zen 4 and newer): ``bf16-mixed``. On a CPU
  without them bf16 is emulated and slower than float32. A process started with
  ``ATEN_CPU_CAPABILITY=avx2`` is treated as an AVX2 machine, so it chooses float32
  as one would;
* anything else: ``32-true``.

``train.channels_last=auto`` is on for every CPU run (oneDNN's convolutions are
1.2-1.5x faster in NHWC, float32 and bf16 alike; benchmarks/bench_training_throughput.py)
and for bf16 on a GPU (cuDNN's bf16 convolutions want NHWC). Losses, metrics and augmentation stay float32 in every case
(``vicious.attack.lightning_module``). The choice depends only on the machine, so a run
is bit-reproducible on the machine that made it; ``environment.json`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vicious.config.schema import TrainConfig


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs PyTorch's bf16 kernels natively (AVX-512 level with AMX or AVX512-BF16)."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


def trains_on_cuda(train: TrainConfig) -> bool:
    """Whether Lightning will put this config's training on a CUDA GPU."""
    return torch.cuda.is_available() and train.accelerator in ("auto", "gpu", "cuda")


@dataclass(frozen=True)
class NumericPlan:
    """The resolved ``train.precision`` and ``train.channels_last``."""

    precision: str
    channels_last: bool

    def record(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last}


def numeric_plan(train: TrainConfig) -> NumericPlan:
    """Resolve ``auto`` in ``train.precision`` and ``train.channels_last`` for this machine."""
    precision = train.precision
    if precision == "auto":
        if trains_on_cuda(train):
            native = torch.cuda.is_bf16_supported()
        else:
            native = cpu_has_native_bf16()
        precision = "bf16-mixed" if native else "32-true"
    channels_last = train.channels_last
    if channels_last == "auto":
        channels_last = not trains_on_cuda(train) or precision == "bf16-mixed"
    return NumericPlan(precision, bool(channels_last))
