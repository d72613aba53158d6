"""Release policies, and feeding released vectors to a server's decoder."""

from __future__ import annotations

import pytest
import torch

from vicious.defences.release_evaluation import observed_decoder
from vicious.models import create_model
from vicious.release.policies import Identity, LabelOnly, Noise, Rounding, Temperature, TopK, parse_policy

LOGITS = torch.randn(200, 10, generator=torch.Generator().manual_seed(0)) * 2
PROBS = torch.softmax(LOGITS, dim=1)


def test_top_k_keeps_the_k_largest_and_fills_the_rest():
    released = TopK(3)(PROBS, "probabilities")
    top = PROBS.topk(3, dim=1)
    torch.testing.assert_close(released.gather(1, top.indices), top.values)
    assert int((released > 0).sum(dim=1).max()) == 3 and float(released.sum(dim=1).max()) <= 1 + 1e-6
    for k in (1, 2):
        as_logits = TopK(k)(LOGITS, "logits")
        top = LOGITS.topk(k, dim=1)
        torch.testing.assert_close(as_logits.gather(1, top.indices), top.values)
        others = as_logits.sort(dim=1, descending=True).values[:, k:]
        torch.testing.assert_close(others, (top.values[:, -1:] - 10).expand_as(others))
        assert torch.equal(as_logits.argmax(dim=1), LOGITS.argmax(dim=1))


def test_label_only_and_rounding():
    one_hot = LabelOnly()(PROBS, "probabilities")
    assert torch.equal(one_hot.argmax(dim=1), PROBS.argmax(dim=1)) and torch.equal(one_hot.sum(dim=1), torch.ones(200))
    rounded = Rounding(2)(PROBS, "probabilities")
    assert torch.allclose(rounded * 100, (rounded * 100).round(), atol=1e-4)
    assert float((rounded - PROBS).abs().max()) <= 0.005 + 1e-6


def test_temperature_on_probabilities_equals_softmax_of_scaled_logits():
    torch.testing.assert_close(Temperature(2.0)(PROBS, "probabilities"), torch.softmax(LOGITS / 2, dim=1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(Temperature(0.5)(LOGITS, "logits"), LOGITS * 2)


def test_noise_has_the_requested_scale_and_is_seeded():
    zeros = torch.zeros(20_000, 10)
    gaussian = Noise("gaussian", 0.1)(zeros, "logits", generator=torch.Generator().manual_seed(1))
    assert float(gaussian.std()) == pytest.approx(0.1, rel=0.02)
    laplace = Noise("laplace", 0.1)(zeros, "logits", generator=torch.Generator().manual_seed(1))
    assert float(laplace.abs().mean()) == pytest.approx(0.1, rel=0.02)  # E|X| = b
    assert float(laplace.var()) == pytest.approx(2 * 0.01, rel=0.04)  # Var = 2 b^2
    again = Noise("laplace", 0.1)(zeros, "logits", generator=torch.Generator().manual_seed(1))
    assert torch.equal(laplace, again)


def test_policies_parse_from_their_names():
    for policy in (Identity(), TopK(3), LabelOnly(), Rounding(2), Temperature(0.5), Noise("gaussian", 0.05), Noise("laplace", 0.1)):
        assert parse_policy(policy.name) == policy
    with pytest.raises(ValueError, match="unknown release policy"):
        parse_policy("blur-3")
    with pytest.raises(ValueError, match="k >= 1"):
        parse_policy("top-0")


def test_top_k_is_refused_for_attributes():
    with pytest.raises(ValueError, match="classes"):
        TopK(2)(torch.rand(4, 5), "probabilities", "multilabel")


def test_observed_decoder_takes_probabilities_where_the_server_took_logits():
    torch.manual_seed(0)
    decoder = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=10, image_size=16,
                           input_form="softmax").eval()
    logits = torch.randn(5, 10)
    with torch.no_grad():
        torch.testing.assert_close(observed_decoder(decoder)(torch.softmax(logits, 1)), decoder(logits))
    assert decoder.input_form == "softmax"  # the original is untouched
