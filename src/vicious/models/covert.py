"""A covert encoding: G reads F's outputs through a secret keyed mixing (``model.covert_key``).

What the mixing can and cannot do. It is a fixed function of the released outputs, so it
takes no information away from the user: a shadow decoder sees exactly what the server's
G sees. What it changes is how *hard* the image code is to read. A linear mixing (a secret
rotation alone) changes nothing: G's first layer is linear and absorbs it, so F learns the
same code. What makes a shadow decoder's job harder is a mixing whose *read-out is not
smooth*: G sees each rotated output ``u`` only through ``sin`` and ``cos`` of ``w u + phase``
for frequencies ``w`` of several radians per unit, i.e. only its phase modulo ``2 pi / w``.
Trained jointly through it, F places the image code in those phases: small displacements of
the outputs, repeated many times across a class's spread (the phase wraps). To a user who
does not know the rotation, the frequencies and the phases, the map from outputs to image is
then a folded, high-frequency function of the outputs. Networks trained by gradient descent
learn low frequencies first (spectral bias, Rahaman et al. 2019), and a user has a few
thousand images and a short budget, so a smooth shadow decoder fits the coarse, class-level
part and misses the folded code; the server's G is handed the unfolded phases.

The design, and why:

* the mixing reads the *log-odds* (centred logits, or logs of the released probabilities:
  ``vicious.release.outputs``), the representation the excess-leakage detector reads, so a
  covert run puts nothing in a direction the detector ignores (the common shift of the logits)
  and any gap it opens comes from the fold alone;
* a random orthogonal rotation (Haar, from the key) first, so that every folded coordinate
  mixes all K outputs: the code is aligned with no class's output;
* two frequencies per rotated coordinate, drawn in ``[w, 2w)``, with random phases; sin and
  cos of each give its phase exactly, and two incommensurate periods together tell apart
  points that one period would alias, so the 4K features are injective on the range outputs
  take (checked in tests/test_covert.py) and G loses nothing;
* fixed buffers, no parameters: the key is the secret, not something G learns; they are
  saved in the decoder's state dict (so a decoder file is what was trained) and checked on
  loading against the ones the key rebuilds (a decoder opened with another key is refused);
* computed in float32 outside autocast: under bf16 a phase of tens of radians would keep
  one or two significant digits.

The frequency trades the two sides: too low and the mixing is nearly linear (nothing hidden);
too high and F cannot place its outputs precisely enough for G to read the phase (the server
loses its own reconstruction). ``benchmarks/bench_covert.py`` measures both. Measured there
(Fashion-MNIST, WRN-10-1, 3000 images, 4 epochs, key 7): joint training answers the fold by
*shrinking* F's log-odds (within-class std 1.12 -> 0.39, about a quarter of the lowest period),
back into the part where the mixing is nearly linear, at 12 points of accuracy, and the
excess-leakage gap hardly moves (+2.82 vs +3.08 dB at 2000 images x 30 epochs). A fixed
frequency in units of the outputs does not force the fold: F's scale is free, and the
detector standardises the residuals, so only the fold, not the amplitude, can hide the code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vicious.data.types import Task
from vicious.models.decoder import outputs_to_probabilities
from vicious.release.outputs import unchecked_log_odds
from vicious.seeding import generator

#: Radians per unit of log-odds of the lowest frequency (the highest is twice this).
DEFAULT_FREQUENCY = 3.0
#: Largest difference between a saved buffer and the one the key rebuilds (QR differs in the
#: last bits between LAPACK builds).
_TOLERANCE = 1e-5


class CovertMixing(nn.Module):
    """Observed outputs (N, K) -> 4K features ``sin``/``cos`` of ``w * (R z) + phase`` (module
    docstring), z the log-odds; R, w and the phases are drawn from ``key`` alone.

    ``probabilities``: the server observes probabilities (the ``softmax`` output form), else logits.
    """

    def __init__(self, num_inputs: int, key: int, probabilities: bool = False, task: Task = "multiclass",
                 frequency: float = DEFAULT_FREQUENCY) -> None:
        super().__init__()
        if frequency <= 0:
            raise ValueError(f"the covert frequency must be positive, got {frequency}")
        self.probabilities, self.task, self.num_outputs = probabilities, task, 4 * num_inputs
        draws = generator(key)
        q, r = torch.linalg.qr(torch.randn(num_inputs, num_inputs, generator=draws, dtype=torch.float64))
        rotation = q * torch.sign(torch.diagonal(r))  # the sign fix makes Q Haar-distributed
        frequencies = frequency * (1 + torch.rand(2, num_inputs, generator=draws, dtype=torch.float64))
        phases = 2 * math.pi * torch.rand(2, num_inputs, generator=draws, dtype=torch.float64)
        self.register_buffer("rotation", rotation.float())
        self.register_buffer("frequencies", frequencies.float())
        self.register_buffer("phases", phases.float())

    def forward(self, observed: torch.Tensor) -> torch.Tensor:
        with torch.autocast(observed.device.type, enabled=False):
            z = unchecked_log_odds(observed.float(), "probabilities" if self.probabilities else "logits", self.task)
            angles = (z @ self.rotation.T)[:, None, :] * self.frequencies + self.phases  # (N, 2, K)
            return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).flatten(1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name, own in self.named_buffers():
            saved = state_dict.get(prefix + name)
            if saved is not None and (saved.shape != own.shape or (saved.float().cpu() - own.cpu()).abs().max() > _TOLERANCE):
                raise ValueError("these decoder weights were trained with another covert mixing; "
                                 "open them with the model.covert_key they were trained with")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CovertDecoder(nn.Module):
    """A decoder behind a :class:`CovertMixing`: ``forward_observed`` mixes first, so released
    outputs (``vicious.release``) reach it through the same mixing.

    Args:
        decoder: any G with ``forward_observed`` that takes ``mixing.num_outputs`` features.
        mixing: the keyed mixing.
        input_form, task: as the other decoders' (``forward`` applies the softmax first).
    """

    def __init__(self, decoder: nn.Module, mixing: CovertMixing, input_form: str = "raw",
                 task: Task = "multiclass") -> None:
        super().__init__()
        if input_form not in ("raw", "softmax"):
            raise ValueError(f"input_form must be 'raw' or 'softmax', got {input_form!r}")
        self.decoder, self.mixing, self.input_form, self.task = decoder, mixing, input_form, task

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.input_form == "softmax":
            outputs = outputs_to_probabilities(outputs, self.task)
        return self.forward_observed(outputs)

    def forward_observed(self, outputs: torch.Tensor) -> torch.Tensor:
        """G on the vector the server observes, through the mixing."""
        return self.decoder.forward_observed(self.mixing(outputs))
