"""What training prints: quieter Lightning (its start-up banners drown the progress that matters),
a progress bar on a terminal and one line per epoch elsewhere."""

from __future__ import annotations

import logging
import sys
import time

_BANNER_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


def quiet_lightning() -> None:
    """Show only Lightning's warnings and errors (by logger name: Lightning need not be imported)."""
    for name in _BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def epoch_progress_callbacks(progress: bool | str, label: str, stream=None) -> tuple[bool, list]:
    """How a phase reports progress (``train.progress``): ``(progress bar on, extra callbacks)``.

    ``True``: a bar only on a terminal; a redirected log (a file, a pipe, a job
    scheduler) gets one line per epoch instead of thousands of carriage-return redraws.
    ``"lines"``: one line per epoch even on a terminal (processes sharing one).
    ``False``: nothing (``--quiet``).
    """
    stream = stream or sys.stdout
    if not progress:
        return False, []
    if progress is True and stream.isatty():
        return True, []
    return False, [EpochLines(label, stream)]


class EpochLines:
    """A Lightning callback printing one line per finished epoch (rank zero only):
    ``vicious/joint epoch 3/6: loss 0.4123, val accuracy 0.8420, mse 0.0231, ssim 0.587 (11.2 s)``."""

    def __new__(cls, label: str, stream):
        # Built on first use, so that importing this module does not import Lightning.
        from lightning.pytorch.callbacks import Callback

        class _EpochLines(Callback):
            def __init__(self) -> None:
                self.label, self.stream = label, stream
                self._loss_sum, self._batches, self._started = 0.0, 0, 0.0

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self._loss_sum, self._batches, self._started = 0.0, 0, time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                if loss is not None:
                    # A running device tensor: adding it does not wait for the device.
                    self._loss_sum = self._loss_sum + loss.detach()
                    self._batches += 1

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                if not trainer.is_global_zero:
                    return
                parts = []
                if self._batches:
                    parts.append(f"loss {float(self._loss_sum) / self._batches:.4f}")
                shown = [(name.removeprefix("val/"), float(value)) for name, value in trainer.callback_metrics.items()
                         if name.startswith("val/") and name != "val/score"]
                if shown:
                    parts.append("val " + ", ".join(f"{name} {value:.4f}" for name, value in shown))
                seconds = time.perf_counter() - self._started
                print(f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
                      f"{', '.join(parts)} ({seconds:.1f} s)", file=self.stream, flush=True)

        return _EpochLines()
