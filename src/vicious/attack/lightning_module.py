"""One LightningModule for every regime: which networks learn is the ``phase``.

* ``joint``: F and G together (vicious, autoencoder);
* ``classifier``: F alone on the task (first half of honest);
* ``decoder``: G alone on the outputs of a frozen F (second half of honest).

Models stay plain ``nn.Module``s; everything about training lives here.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from piq import ssim as piq_ssim
from torchmetrics import MeanMetric

from vicious.attack.objective import output_entropy, reconstruction_loss, task_loss
from vicious.data.augment import with_augmented_copies
from vicious.experiments.config import LossConfig

Phase = Literal["joint", "classifier", "decoder"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; training stops and the last good checkpoint is kept."""


def selection_score(phase: Phase, loss: LossConfig, accuracy: torch.Tensor, mse: torch.Tensor, ssim: torch.Tensor):
    """Validation score to minimise (METHOD.md, model selection)."""
    reconstruction = loss.alpha_ssim * (1 - ssim) + loss.alpha_huber * mse
    if phase == "classifier":
        return 1 - accuracy
    if phase == "decoder" or loss.beta_c == 0:
        return reconstruction
    return (1 - accuracy) + reconstruction


class AttackModule(L.LightningModule):
    def __init__(
        self,
        classifier: torch.nn.Module,
        decoder: torch.nn.Module,
        *,
        phase: Phase,
        loss: LossConfig,
        lr: float,
        seed: int,
        augment: bool,
        pos_weight: torch.Tensor | None = None,
        channels_last: bool = False,
        nan_check_every: int = 1,
    ) -> None:
        super().__init__()
        self.classifier, self.decoder = classifier, decoder
        self.phase, self.loss_config, self.lr = phase, loss, lr
        self.seed, self.augment = seed, augment
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.nan_check_every = nan_check_every
        self.val_accuracy, self.val_mse, self.val_ssim = MeanMetric(), MeanMetric(), MeanMetric()
        if phase == "decoder":
            self.classifier.requires_grad_(False)

    @property
    def multilabel(self) -> bool:
        return self.pos_weight is not None

    def _images(self, batch_images: torch.Tensor) -> torch.Tensor:
        # Data stays uint8 until it is on the device: 4x less to move.
        return (batch_images.float() / 255).contiguous(memory_format=self.memory_format)

    def training_step(self, batch, batch_idx):
        images, labels = self._images(batch[0]), batch[1]
        if self.augment:
            # Seeded by position, not by a running RNG, so a resumed run draws the same copies.
            generator = torch.Generator(device=images.device)
            generator.manual_seed(hash((self.seed, self.current_epoch, batch_idx, self.global_rank)) % 2**62)
            images, labels = with_augmented_copies(images, labels, generator=generator)
        cfg = self.loss_config
        total = images.new_zeros(())
        if self.phase == "decoder":
            self.classifier.eval()  # frozen F: BatchNorm keeps its running statistics
            with torch.no_grad():
                logits = self.classifier(images)
        else:
            logits = self.classifier(images)
            if cfg.beta_c:
                task = task_loss(logits, labels, self.pos_weight)
                self.log("train/task_loss", task, on_step=False, on_epoch=True)
                total = total + cfg.beta_c * task
            if cfg.beta_ent:
                total = total + cfg.beta_ent * output_entropy(logits, self.multilabel)
        if self.phase != "classifier":
            reconstruction = reconstruction_loss(
                self.decoder(logits.float()), images,
                alpha_huber=cfg.alpha_huber, alpha_ssim=cfg.alpha_ssim, huber_delta=cfg.huber_delta,
            )
            self.log("train/reconstruction_loss", reconstruction, on_step=False, on_epoch=True)
            total = total + cfg.beta_r * reconstruction
        # Checking finiteness synchronises with the device, so accelerators check periodically.
        if batch_idx % self.nan_check_every == 0 and not torch.isfinite(total):
            raise TrainingDiverged(
                f"loss became {total.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                "the last good checkpoint is kept; lower train.lr or check the data"
            )
        self.log("train/loss", total, on_step=False, on_epoch=True, prog_bar=True)
        return total

    def validation_step(self, batch, batch_idx):
        images, labels = self._images(batch[0]), batch[1]
        logits = self.classifier(images)
        if self.phase != "decoder" or self.loss_config.beta_c:
            if labels.dtype.is_floating_point:
                correct = ((logits > 0).float() == labels).float().mean(dim=1)
            else:
                correct = (logits.argmax(dim=1) == labels).float()
            self.val_accuracy.update(correct)
        if self.phase != "classifier":
            x_rec = self.decoder(logits.float()).float()
            self.val_mse.update(((x_rec - images) ** 2).flatten(1).mean(dim=1))
            self.val_ssim.update(
                piq_ssim(x_rec, images, data_range=1.0, kernel_size=11, kernel_sigma=1.5,
                         downsample=False, reduction="none")
            )

    def on_validation_epoch_end(self) -> None:
        zero = torch.zeros((), device=self.device)
        # MeanMetric.compute() all-reduces across DDP processes.
        accuracy = self.val_accuracy.compute() if self.val_accuracy.update_called else zero
        mse = self.val_mse.compute() if self.val_mse.update_called else zero
        ssim = self.val_ssim.compute() if self.val_ssim.update_called else zero + 1
        score = selection_score(self.phase, self.loss_config, accuracy, mse, ssim)
        self.log_dict(
            {"val/accuracy": accuracy, "val/mse": mse, "val/ssim": ssim, "val/score": score},
            prog_bar=True, sync_dist=False,
        )
        for metric in (self.val_accuracy, self.val_mse, self.val_ssim):
            metric.reset()

    def configure_optimizers(self):
        # One Adam over every trainable parameter equals one Adam per network (METHOD.md).
        parameters = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(parameters, lr=self.lr)
