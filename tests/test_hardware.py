"""What train.precision=auto and train.channels_last=auto choose, by machine."""

import pytest
import torch

from vicious.config.schema import TrainConfig
from vicious.runs import hardware


@pytest.mark.parametrize("capability, amx, bf16, expected", [
    ("AVX2", True, True, "32-true"),          # an AVX2 build (or ATEN_CPU_CAPABILITY=avx2) never picks bf16
    ("AVX512", False, False, "32-true"),      # AVX-512 without bf16 units: emulated, slower
    ("AVX512", True, False, "bf16-mixed"),    # AMX tiles (Sapphire Rapids)
    ("AVX512", False, True, "bf16-mixed"),    # AVX512-BF16 (Zen 4, Cooper Lake)
])
def test_cpu_auto_precision_follows_native_bf16(monkeypatch, capability, amx, bf16, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    plan = hardware.numeric_plan(TrainConfig(accelerator="cpu"))
    assert plan.precision == expected
    assert plan.channels_last is True  # every CPU run: NHWC is faster in float32 too


def test_explicit_settings_are_kept(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    plan = hardware.numeric_plan(TrainConfig(accelerator="cpu", precision="32-true", channels_last=False))
    assert (plan.precision, plan.channels_last) == ("32-true", False)


def test_the_choice_is_recorded_in_environment_json():
    from vicious.config.schema import RunConfig
    from vicious.runs.layout import environment_record

    record = environment_record(RunConfig())
    plan = hardware.numeric_plan(RunConfig().train)
    assert (record["precision"], record["channels_last"]) == (plan.precision, plan.channels_last)
    assert record["precision"] in ("32-true", "bf16-mixed")
