"""A user-side purifier: a small network that rewrites the outputs before they leave the device.

After Yang et al. 2020, "Defending Model Inversion and Membership Inference Attacks via
Prediction Purification" (arXiv 2005.03915): the purifier maps the classifier's outputs
``(N, K)`` to purified outputs of the same form and shape, trained by the user (on their own
images, :func:`vicious.defences.purifier.fit_purifier`) so that an inversion decoder recovers
little from them while they stay close to the originals.

In the log-odds ``z`` (:func:`vicious.release.outputs.log_odds`) the purifier computes

    u = z + MLP(z)                     (K -> hidden -> K, ReLU; the last layer starts at zero,
                                        so an unfitted purifier releases its input unchanged)

then *enforces* the predicted label, rather than hoping training kept it:

* classes: ``u`` is centred (softmax ignores the mean; releasing it would only leak what the
  mean encodes), then the predicted class c (argmax of the original outputs) is raised to
  ``max_{j != c} u_j + margin`` where it is not already that far ahead (at least one float
  step ahead, so that no rounding can make a tie);
* attributes: each attribute's log-odds is pushed to at least ``margin`` on the side of 0 its
  original prediction lies (``> 0.5`` / ``> 0`` is positive, as ``predicted_labels`` reads it).

The release is ``u`` for logits and softmax(u) (sigmoid per attribute) for probabilities. The
whole map is differentiable almost everywhere, so a server training through the policy
(``for_training``) gets the network's gradient. ``__call__`` (the release itself) runs without
building a graph through the network's parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from vicious.data.types import Task
from vicious.models import outputs_to_probabilities
from vicious.release.outputs import Form, log_odds, predicted_labels
from vicious.release.policies import ReleasePolicy


class PurifierNet(nn.Module):
    """log-odds (N, K) -> purified log-odds (N, K) before the label is enforced: z + MLP(z)."""

    def __init__(self, num_outputs: int, hidden: int) -> None:
        super().__init__()
        last = nn.Linear(hidden, num_outputs)
        # Zero last layer: the residual starts at the identity release, the baseline training moves away from.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(num_outputs, hidden), nn.ReLU(), last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.mlp(z)


class Purifier(ReleasePolicy):
    """A fitted (or fresh) purifier for K outputs; ``hidden`` units (default 4K); ``margin``: the
    log-odds gap by which the predicted class (attribute side) is guaranteed to stay on top."""

    name = "purifier"
    differentiable = True

    def __init__(self, num_outputs: int, hidden: int | None = None, margin: float = 0.1) -> None:
        if num_outputs < 1:
            raise ValueError(f"a purifier needs num_outputs >= 1, got {num_outputs}")
        if not margin > 0:
            raise ValueError(f"the purifier's margin must be positive (it keeps the label), got {margin}")
        self.num_outputs = num_outputs
        self.hidden = hidden or 4 * num_outputs
        self.margin = float(margin)
        self.net = PurifierNet(num_outputs, self.hidden).eval()

    def purified_log_odds(self, outputs: torch.Tensor, form: Form, task: Task) -> torch.Tensor:
        """``(N, K)`` purified log-odds, the label enforced (multiclass: centred before the margin)."""
        if outputs.shape[1] != self.num_outputs:
            raise ValueError(f"this purifier was fitted for {self.num_outputs} outputs, got {outputs.shape[1]}; "
                             "fit one on outputs of this classifier")
        # The label is read off the original outputs, not their log-odds: a log can merge two
        # probabilities one unit apart and move the argmax.
        labels = predicted_labels(outputs, form, task)
        u = self.net(log_odds(outputs, form, task))
        if task == "multilabel":
            positive = labels > 0
            return torch.where(positive, u.clamp_min(self.margin), u.clamp_max(-self.margin))
        # Centred before the margin, not after: centring rounds, and could eat a small margin.
        u = u - u.mean(dim=1, keepdim=True)
        index = labels.unsqueeze(1)
        others = u.scatter(1, index, float("-inf")).amax(dim=1, keepdim=True)
        ahead = torch.maximum(others + self.margin, torch.nextafter(others, torch.full_like(others, float("inf"))))
        return u.scatter(1, index, torch.maximum(u.gather(1, index), ahead))

    def apply(self, outputs, form, task, generator):
        u = self.purified_log_odds(outputs, form, task)
        return u if form == "logits" else outputs_to_probabilities(u, task)

    def __call__(self, outputs, form, task="multiclass", generator=None):
        with torch.no_grad():  # a release, not a training step: no graph through the parameters
            return super().__call__(outputs, form, task, generator)

    def __repr__(self) -> str:
        return f"Purifier(num_outputs={self.num_outputs}, hidden={self.hidden}, margin={self.margin:g})"
