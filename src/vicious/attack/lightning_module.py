"""One LightningModule for every regime: which networks learn is the ``phase``.

* ``joint``: F and G together (vicious, autoencoder);
* ``classifier``: F alone on the task (first half of honest);
* ``decoder``: G alone on the outputs of a frozen F (second half of honest).

Models stay plain ``nn.Module``s; everything about training lives here.
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from vicious.attack.evasion import (
    confidence_penalty,
    contrast_penalty,
    leakage_penalty,
    logit_norm_penalty,
    predicted_groups,
)
from vicious.attack.objective import output_entropy, reconstruction_loss, task_loss
from vicious.config.regimes import PHASE_TRAINS, Phase, selection_terms
from vicious.config.schema import EVASION_WEIGHTS, LossConfig
from vicious.data.augment import with_augmented_copies
from vicious.data.perturbations import perturbed_copies
from vicious.metrics.accuracy import correct_predictions
from vicious.metrics.ssim import ssim_separable
from vicious.release.policies import ReleasePolicy, released_outputs
from vicious.seeding import batch_seed, perturbation_seed, release_seed
from vicious.seeding import generator as seeded_generator


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; training stops and the last good checkpoint is kept."""


def _float32(device: torch.device):
    """A block mixed precision leaves alone: augmentation, losses and metrics stay float32
    (under bf16 autocast, blur and SSIM convolutions lose ~1% of the SSIM loss)."""
    return torch.autocast(device.type, enabled=False)


def selection_score(phase: Phase, loss: LossConfig, accuracy: torch.Tensor, mse: torch.Tensor, ssim: torch.Tensor):
    """Validation score to minimise (docs/method.md, "Model selection"; the weights per phase:
    ``vicious.config.regimes``)."""
    counts_accuracy, counts_reconstruction = selection_terms(phase, loss.beta_c)
    reconstruction = loss.alpha_ssim * (1 - ssim) + loss.alpha_huber * mse
    if not counts_reconstruction:
        return 1 - accuracy
    return (1 - accuracy) + reconstruction if counts_accuracy else reconstruction


class AttackModule(L.LightningModule):
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Refused: a run's ``.ckpt.safetensors`` files are safetensors (no pickle), which Lightning's loader
        (``torch.load``) cannot read."""
        raise TypeError(
            f"{checkpoint_path} is a vicious checkpoint (safetensors, not a pickle): open the finished run with "
            "vicious.api.load(RUN), or read the file with vicious.runs.checkpoints.load_state"
        )

    def __init__(
        self,
        classifier: torch.nn.Module,
        decoder: torch.nn.Module,
        *,
        phase: Phase,
        loss: LossConfig,
        lr: float,
        schedule: str = "constant",
        warmup_fraction: float = 0.25,
        decoder_lr_scale: float = 1.0,
        seed: int = 1,
        augment: bool,
        pos_weight: torch.Tensor | None = None,
        channels_last: bool = False,
        nan_check_every: int = 1,
        outputs_given: bool = False,
        release: ReleasePolicy | None = None,
    ) -> None:
        super().__init__()
        self.classifier, self.decoder = classifier, decoder
        self.phase, self.loss_config, self.lr = phase, loss, lr
        self.schedule, self.warmup_fraction, self.decoder_lr_scale = schedule, warmup_fraction, decoder_lr_scale
        self.seed, self.augment = seed, augment
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.nan_check_every = nan_check_every
        # The users' release policy, between F and G (None: G sees F's outputs as they are).
        self.release = None if release is None or release.name == "none" else release
        # Decoder phase only: the batches' second element is F's precomputed outputs, not labels.
        self.outputs_given = outputs_given
        if outputs_given and (phase != "decoder" or augment):
            raise ValueError("precomputed outputs serve only the decoder phase without augmentation")
        self.val_accuracy, self.val_mse, self.val_ssim = MeanMetric(), MeanMetric(), MeanMetric()
        self.world_size = 1  # processes training together; set by setup() under DDP
        # Only the phase's networks learn (DDP also refuses parameters that get no gradient).
        trains_classifier, trains_decoder = PHASE_TRAINS[phase]
        self.classifier.requires_grad_(trains_classifier)
        self.decoder.requires_grad_(trains_decoder)

    def setup(self, stage: str) -> None:
        self.world_size = self.trainer.world_size

    def on_train_start(self) -> None:
        # Checkpoints hold tensors contiguous (safetensors needs it), so Adam's moments of a
        # channels_last weight come back in the other layout. Fused Adam walks storage order and
        # would pair each weight with other weights' moments (silently wrong, as of torch 2.14):
        # give every restored moment its weight's layout back.
        for optimizer in self.trainer.optimizers:
            for param, state in optimizer.state.items():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                        state[key] = torch.empty_like(param).copy_(value)

    @property
    def multilabel(self) -> bool:
        return self.pos_weight is not None

    def _images(self, batch_images: torch.Tensor) -> torch.Tensor:
        # Data stays uint8 until it is on the device: 4x less to move.
        return (batch_images.float() / 255).contiguous(memory_format=self.memory_format)

    def training_step(self, batch, batch_idx):
        images, labels = self._images(batch[0]), batch[1]
        global_batch = batch_idx * self.world_size + self.global_rank
        if self.augment:
            # Seeded by position, not by a running RNG, so a resumed run draws the same copies;
            # by the global batch number (see EpochSeededSampler), so w DDP processes draw the
            # copies one process draws with accumulate_grad_batches=w.
            generator = seeded_generator(batch_seed(self.seed, self.current_epoch, global_batch), images.device)
            with _float32(images.device):
                images, labels = with_augmented_copies(images, labels, generator=generator)
        cfg = self.loss_config
        total = images.new_zeros(())
        if self.outputs_given:
            logits = labels
        elif self.phase == "decoder":
            self.classifier.eval()  # frozen F: BatchNorm keeps its running statistics
            with torch.no_grad():
                logits = self.classifier(images)
        else:
            perturbed_logits = None
            if self.phase == "joint" and cfg.evade_contrast:
                generator = seeded_generator(perturbation_seed(self.seed, self.current_epoch, global_batch), images.device)
                with _float32(images.device):
                    perturbed = perturbed_copies(images, generator)
                # One forward over originals and copies: BatchNorm normalises both with the same
                # batch statistics, so their difference is F's response to the change alone, as
                # at inference, where the detector measures it.
                logits, perturbed_logits = self.classifier(torch.cat([images, perturbed])).chunk(2)
            else:
                logits = self.classifier(images)
            if cfg.beta_c:
                task = task_loss(logits, labels, self.pos_weight)
                self.log("train/task_loss", task, on_step=False, on_epoch=True, sync_dist=True)
                total = total + cfg.beta_c * task
            if cfg.beta_ent:
                total = total + cfg.beta_ent * output_entropy(logits, self.multilabel)
            if self.phase == "joint":
                total = total + self._evasion_loss(logits, perturbed_logits, images)
        if self.phase != "classifier":
            x_rec = self._decode(logits.float(), release_seed(self.seed, self.current_epoch, global_batch), True)
            with _float32(images.device):
                reconstruction = reconstruction_loss(
                    x_rec.float(), images,
                    alpha_huber=cfg.alpha_huber, alpha_ssim=cfg.alpha_ssim, huber_delta=cfg.huber_delta,
                )
            # sync_dist on epoch metrics: one all-reduce per epoch, none per step.
            self.log("train/reconstruction_loss", reconstruction, on_step=False, on_epoch=True, sync_dist=True)
            total = total + cfg.beta_r * reconstruction
        self._record_nonfinite(total, batch_idx)
        if batch_idx % self.nan_check_every == 0:
            self._stop_if_diverged()
        self.log("train/loss", total, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        # Per step, this process's value: Lightning reads it only every log_every_n_steps.
        self.log("train/loss_step", total.detach(), on_step=True, on_epoch=False, sync_dist=False)
        return total

    def _evasion_loss(self, logits: torch.Tensor, perturbed_logits: torch.Tensor | None, images: torch.Tensor):
        """The weighted evasion penalties of docs/method.md, "Evading the detectors"; only those
        whose weight is > 0 are computed (all 0: nothing, the loss is as without them)."""
        cfg, multilabel = self.loss_config, self.multilabel
        total = images.new_zeros(())
        if not any(getattr(cfg, weight) for weight in EVASION_WEIGHTS):
            return total
        with _float32(images.device):
            logits = logits.float()
            groups = predicted_groups(logits.detach(), multilabel)
            terms = {}
            if cfg.evade_logit_norm:
                terms["logit_norm"] = (cfg.evade_logit_norm,
                                       logit_norm_penalty(logits, cfg.evade_logit_norm_target, multilabel))
            if cfg.evade_confidence:
                terms["confidence"] = (cfg.evade_confidence,
                                       confidence_penalty(logits, cfg.evade_confidence_target, multilabel))
            if cfg.evade_contrast and perturbed_logits is not None:
                terms["contrast"] = (cfg.evade_contrast, contrast_penalty(
                    logits, perturbed_logits.float(), groups, cfg.evade_contrast_target, multilabel))
            if cfg.evade_leakage:
                terms["leakage"] = (cfg.evade_leakage, leakage_penalty(
                    logits, images, groups, cfg.evade_leakage_ridge, cfg.evade_leakage_target, multilabel))
        for name, (weight, penalty) in terms.items():
            self.log(f"train/evade_{name}", penalty, on_step=False, on_epoch=True, sync_dist=True)
            total = total + weight * penalty
        return total

    def _decode(self, logits: torch.Tensor, seed: int, training: bool) -> torch.Tensor:
        """G's reconstruction from what the server receives: F's outputs after the release policy."""
        if self.release is None:
            return self.decoder(logits)
        task = "multilabel" if self.multilabel else "multiclass"
        output = getattr(self.decoder, "input_form", "raw")
        # Noise is drawn on the CPU (the policies' generators are CPU ones), seeded by position.
        released = released_outputs(self.release, logits, output, task, seeded_generator(seed), training=training)
        return self.decoder.forward_observed(released)

    def _record_nonfinite(self, total: torch.Tensor, batch_idx: int) -> None:
        """Keep (batch, loss) of the first non-finite loss on the device: no synchronisation."""
        current = torch.stack([total.new_full((), batch_idx, dtype=torch.float32), total.detach().float()])
        first = getattr(self, "_first_nonfinite", None)
        if first is None:
            first = torch.tensor([-1.0, 0.0], device=total.device)
        take = ~torch.isfinite(current[1]) & (first[0] < 0)
        self._first_nonfinite = torch.where(take, current, first)

    def _stop_if_diverged(self) -> None:
        # Reading the record waits for the device, so accelerators read it every
        # nan_check_every batches, and always before validation and the end of the epoch:
        # no checkpoint is ever written after a non-finite loss.
        first = getattr(self, "_first_nonfinite", None)
        if first is None:
            return
        batch, value = first.tolist()
        if batch >= 0:
            raise TrainingDiverged(
                f"loss became {value} at epoch {self.current_epoch}, batch {int(batch)}; training stopped and "
                "the checkpoints of earlier epochs are kept; start a new run with a lower train.lr, or check the data"
            )

    def on_validation_epoch_start(self) -> None:
        self._stop_if_diverged()

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()

    def validation_step(self, batch, batch_idx):
        images, labels = self._images(batch[0]), batch[1]
        logits = self.classifier(images)
        if self.phase != "decoder" or self.loss_config.beta_c:
            correct = correct_predictions(logits, labels)
            self.val_accuracy.update(correct.mean(dim=1) if correct.dim() == 2 else correct)
        if self.phase != "classifier":
            x_rec = self._decode(logits.float(), release_seed(self.seed, -1, batch_idx), False).float()
            self.val_mse.update(((x_rec - images) ** 2).flatten(1).mean(dim=1))
            with _float32(images.device):
                self.val_ssim.update(ssim_separable(x_rec, images))

    def on_validation_epoch_end(self) -> None:
        zero = torch.zeros((), device=self.device)
        # MeanMetric.compute() all-reduces across DDP processes.
        accuracy = self.val_accuracy.compute() if self.val_accuracy.update_called else zero
        mse = self.val_mse.compute() if self.val_mse.update_called else zero
        ssim = self.val_ssim.compute() if self.val_ssim.update_called else zero + 1
        score = selection_score(self.phase, self.loss_config, accuracy, mse, ssim)
        # Only what this phase measures: a classifier alone has no reconstruction to score.
        logged = {"val/score": score}
        if self.phase != "decoder" or self.loss_config.beta_c:
            logged["val/accuracy"] = accuracy
        if self.phase != "classifier":
            logged |= {"val/mse": mse, "val/ssim": ssim}
        self.log_dict(logged, prog_bar=True, sync_dist=False)
        for metric in (self.val_accuracy, self.val_mse, self.val_ssim):
            metric.reset()

    def configure_optimizers(self):
        # One Adam over every trainable parameter equals one Adam per network
        # (docs/method.md, "Optimisation").
        groups = [{"params": [p for p in network.parameters() if p.requires_grad], "lr": self.lr * scale}
                  for network, scale in ((self.classifier, 1.0), (self.decoder, self.decoder_lr_scale))]
        groups = [g for g in groups if g["params"]]
        # Fused Adam: one kernel for all parameters instead of a dozen per tensor; same maths.
        optimizer = torch.optim.Adam(groups, lr=self.lr, fused=True)
        if self.schedule == "constant":
            return optimizer
        # One-cycle: warm up to lr, then cosine decay to lr / 1e4, over the phase's steps.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(int(self.trainer.estimated_stepping_batches), 1),
            pct_start=self.warmup_fraction, cycle_momentum=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
