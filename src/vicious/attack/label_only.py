"""The label-only floor: what a server rebuilds from the predicted label alone.

Any classifier, honest or not, tells the server its decision. The best image a server
can guess from a decision alone, under squared error, is the mean of the training
images that received it. This "decoder" needs no training and no access to the
outputs beyond the decision; a trained decoder that does no better than it has
learnt nothing from the K numbers that the label does not already give away.

* multiclass: the mean training image of the predicted class (``argmax`` of the outputs);
* multilabel: the mean training image whose attribute pattern (each output
  thresholded at 0) equals the predicted pattern; where no training image has that
  pattern, the mean over the training images whose patterns are nearest in Hamming
  distance.
"""

from __future__ import annotations

import torch


class LabelOnlyDecoder:
    """Class-mean reconstructions from predicted labels.

    Args:
        images: training images (N, C, H, W), float in [0, 1] or uint8 (then divided by 255).
        labels: int64 class indices (N,) with ``num_classes`` classes, or float 0/1
            attribute labels (N, K).
        num_classes: K for multiclass labels (classes absent from ``images`` get the
            overall mean image).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> None:
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need as many labels as images (at least one), got {len(images)} and {len(labels)}")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        flat = x.reshape(len(x), -1).double()
        self.shape = tuple(x.shape[1:])
        self.multilabel = labels.dtype.is_floating_point
        if self.multilabel:
            # One row per distinct training pattern: its bits and the mean image of its images.
            self.patterns, inverse = torch.unique(labels > 0.5, dim=0, return_inverse=True)
        else:
            if num_classes is None:
                raise ValueError("num_classes is needed for multiclass labels")
            self.patterns, inverse = None, labels.long()
        groups = int(inverse.max()) + 1 if num_classes is None or self.multilabel else num_classes
        sums = torch.zeros(groups, flat.shape[1], dtype=torch.float64).index_add_(0, inverse, flat)
        counts = torch.bincount(inverse, minlength=groups).double()
        overall = flat.mean(dim=0)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], overall)
        self.means, self.counts = means.float(), counts

    def __call__(self, outputs: torch.Tensor) -> torch.Tensor:
        """Reconstructions (N, C, H, W) from classifier outputs (N, K): logits or probabilities
        for multiclass; logits for multilabel (thresholded at 0)."""
        if not self.multilabel:
            return self.means[outputs.argmax(dim=1).cpu()].reshape(-1, *self.shape)
        predicted = (outputs > 0).cpu()
        # In chunks of rows: the distance table is rows x patterns x K booleans.
        rows = max(1, 2**26 // (len(self.patterns) * predicted.shape[1]))
        return torch.cat([self._nearest_means(predicted[i : i + rows]) for i in range(0, len(predicted), rows)])

    def _nearest_means(self, predicted: torch.Tensor) -> torch.Tensor:
        # Hamming distance to every training pattern; the mean of the nearest patterns' images,
        # weighted by how many images each holds.
        distance = (predicted[:, None, :] != self.patterns[None, :, :]).sum(dim=2)
        nearest = (distance == distance.min(dim=1, keepdim=True).values).double() * self.counts[None, :]
        weights = nearest / nearest.sum(dim=1, keepdim=True)
        return (weights @ self.means.double()).float().reshape(-1, *self.shape)
