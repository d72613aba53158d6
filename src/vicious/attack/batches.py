"""Feeding tensors held in memory to Lightning, in one process or many.

Images stay uint8 tensors; ``TensorImageDataset.__getitems__`` gathers a whole batch
with one indexing operation (the DataLoader uses it when present), instead of
stacking hundreds of single images. With the tensors on a GPU (``TensorDataModule``'s
``data_on_device``) the batch is gathered there and nothing crosses the bus but the
batch's indices.

Under data-parallel training (DDP) every process builds its own loaders and the
samplers here shard themselves; the Trainer must be built with
``use_distributed_sampler=False``. (Lightning would otherwise wrap a custom sampler
in ``DistributedSamplerWrapper``, whose ``set_epoch`` does not reach the wrapped
sampler: every epoch would repeat the first epoch's order.)
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vicious.seeding import epoch_seed
from vicious.seeding import generator as seeded_generator


class TensorImageDataset(Dataset):
    """(images uint8 N×C×H×W, labels) held as tensors, on any device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        if self.images.device.type == "cuda":
            # From pinned memory the copy is asynchronous; a plain copy would make the
            # host wait for the GPU to finish the previous step.
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        elif self.images.device != index.device:
            index = index.to(self.images.device)
        return self.images[index], self.labels[index]


def _check_shard(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of world_size {world_size}")


class EpochSeededSampler(Sampler[int]):
    """Training order: a shuffle that depends only on (seed, epoch), so resuming draws the same order.

    With ``world_size`` w > 1 (DDP) the epoch's order is cut into batches of
    ``batch_size`` and process ``rank`` takes batches rank, rank + w, rank + 2w, ...:
    w processes together train on the batches, in the order, that one process sees
    with ``accumulate_grad_batches=w``. The tail that does not fill a round of w
    batches is split evenly, padded by wrapping round to the start of the order (at
    most w - 1 repeated images, as ``DistributedSampler``), because DDP needs every
    process to take the same number of steps.
    """

    def __init__(self, length: int, seed: int, *, batch_size: int = 1, rank: int = 0, world_size: int = 1) -> None:
        if length < 1 or batch_size < 1:
            raise ValueError(f"need length >= 1 and batch_size >= 1, got {length} and {batch_size}")
        _check_shard(rank, world_size)
        self.length, self.seed, self.epoch = length, seed, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:  # called by Lightning each epoch
        self.epoch = epoch

    def _round_and_tail(self) -> tuple[int, int]:
        """(images in whole rounds of w batches, images of the tail per process)."""
        per_round = self.batch_size * self.world_size
        whole = self.length // per_round * per_round
        return whole, math.ceil((self.length - whole) / self.world_size)

    def __len__(self) -> int:
        whole, tail = self._round_and_tail()
        return whole // self.world_size + tail

    def indices(self) -> torch.Tensor:
        """This process's indices for the current epoch, (len(self),) int64."""
        generator = seeded_generator(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator)
        if self.world_size == 1:
            return order
        whole, tail = self._round_and_tail()
        head = order[:whole].view(-1, self.world_size, self.batch_size)[:, self.rank].reshape(-1)
        padded = order[torch.arange(whole, whole + tail * self.world_size) % self.length]
        return torch.cat([head, padded.view(self.world_size, tail)[self.rank]])

    def __iter__(self):
        return iter(self.indices().tolist())


class ShardSampler(Sampler[int]):
    """Evaluation order: in order, process ``rank`` of ``world_size`` taking its contiguous
    share without padding, so every image is scored exactly once across processes and
    sums all-reduced across them (torchmetrics' ``MeanMetric``) equal one process's."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_shard(rank, world_size)
        if length < world_size:
            # Every process must see a batch: DDP broadcasts BatchNorm buffers at the
            # first forward pass of validation, a collective all processes join.
            raise ValueError(f"{length} images cannot be shared by {world_size} processes; "
                             "use more validation images (data.val_limit) or fewer devices")
        self.start, self.stop = rank * length // world_size, (rank + 1) * length // world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        return iter(range(self.start, self.stop))


def _whole_batch(batch):
    return batch


def make_loader(
    images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, shuffle: bool, seed: int = 0,
    rank: int = 0, world_size: int = 1,
) -> DataLoader:
    """Batches of (uint8 images, labels): shuffled per epoch for training, else in order;
    this process's shard when ``world_size`` > 1."""
    dataset = TensorImageDataset(images, labels)
    if shuffle:
        sampler = EpochSeededSampler(len(dataset), seed, batch_size=batch_size, rank=rank, world_size=world_size)
    else:
        sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_whole_batch)


class TensorDataModule(L.LightningDataModule):
    """Training and validation splits held in memory (objects with uint8 ``images`` N×C×H×W
    and ``labels``), each process loading its own shard.

    ``batch_size`` is per process: under DDP on w devices an optimiser step sees
    w × batch_size images. With ``data_on_device`` and a CUDA device the tensors are
    moved there once, in ``setup``, so batches are gathered on the GPU (cost: the
    splits' size in GPU memory per process, 150 MB for CIFAR-10); elsewhere it does
    nothing. Use with ``Trainer(use_distributed_sampler=False)`` (module docstring).
    """

    def __init__(self, train, val, *, batch_size: int, eval_batch_size: int, seed: int,
                 data_on_device: bool = True) -> None:
        super().__init__()
        self.splits = {"train": (train.images, train.labels), "val": (val.images, val.labels)}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.data_on_device = data_on_device
        self.tensors = dict(self.splits)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        if self.data_on_device and device.type == "cuda":
            self.tensors = {name: (x.to(device), y.to(device)) for name, (x, y) in self.splits.items()}

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(*self.tensors[name], batch_size=batch_size, shuffle=shuffle, seed=self.seed,
                           rank=self.trainer.global_rank, world_size=self.trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)
