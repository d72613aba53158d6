"""Quieter Lightning: its start-up banners (device summary, tips) drown the progress that matters."""

from __future__ import annotations

import logging

_BANNER_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


def quiet_lightning() -> None:
    """Show only Lightning's warnings and errors (by logger name: Lightning need not be imported)."""
    for name in _BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
