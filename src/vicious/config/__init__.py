"""What a run is, before anything runs: the typed config (``schema``), the named presets
(``presets``) and the regimes (``regimes``: what honest, vicious and autoencoder train).

The bottom of the package: it imports nothing of vicious but ``vicious.files``, and no torch.
"""

from vicious.config.presets import PRESETS, get_preset, preset_names
from vicious.config.regimes import REGIMES, Regime
from vicious.config.schema import ConfigError, RunConfig, apply_overrides, load_config, save_config, validate_config

__all__ = ["PRESETS", "REGIMES", "ConfigError", "Regime", "RunConfig", "apply_overrides", "get_preset", "load_config",
           "preset_names", "save_config", "validate_config"]
