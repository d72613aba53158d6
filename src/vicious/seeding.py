"""Where every random draw of vicious comes from, in one place.

A seed fixes everything a run or an audit draws, and nothing reads or advances the global
random state of the caller:

* ``generator(seed)``: a ``torch.Generator`` of its own, for one stream (a subset, a split's
  permutation of tensors, a bootstrap, a detector's noise, a shadow decoder's batches);
* ``seeded_initialisation(seed)``: builds networks from a fixed stream, then gives the
  caller's global state back (PyTorch initialises parameters from the global RNG);
* ``epoch_seed`` and ``batch_seed``: the streams of a training run, derived from the run's
  seed and the position in training (not from a running RNG), so a resumed run draws what an
  uninterrupted one would, and w DDP processes draw what one process draws;
* the train/validation split draws from numpy's PCG64 (``vicious.data.splits``), the same on
  every platform; Lightning's ``seed_everything`` seeds the rest of a training run.

Changing a derivation here changes every result that depends on it: keep them as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator of its own, seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


@contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Within: the global RNG starts from ``seed``; after: it is as before (``fork_rng``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shuffling (``vicious.attack.batches``)."""
    return seed * 100_003 + epoch


def batch_seed(seed: int, epoch: int, global_batch: int) -> int:
    """The seed of a training batch's augmented copies (``vicious.attack.lightning_module``);
    ``hash`` of a tuple of ints does not depend on PYTHONHASHSEED."""
    return hash((seed, epoch, global_batch)) % 2**62


def release_seed(seed: int, epoch: int, global_batch: int) -> int:
    """The seed of a training batch's release noise (``release.policy``), apart from its
    augmentation's; ``epoch=-1`` for validation batches."""
    return hash((seed, epoch, global_batch, 1)) % 2**62


def perturbation_seed(seed: int, epoch: int, global_batch: int) -> int:
    """The seed of a training batch's perturbed copies (``loss.evade_contrast``), apart from
    its augmentation's and its release noise's."""
    return hash((seed, epoch, global_batch, 2)) % 2**62
