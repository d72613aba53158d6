"""The user-side purifier (Yang et al. 2020, arXiv 2005.03915): the label it keeps, what it hides
from a decoder trained afresh on its outputs, and the file a user ships it in."""

from __future__ import annotations

import pytest
import torch

from vicious.defences.purifier import distortion, fit_purifier, load_purifier, save_purifier
from vicious.defences.release_evaluation import evaluate_policy, total_variation
from vicious.defences.shadow import ShadowDecoder, decode, fit_decoder
from vicious.metrics import ImageStatistics, mse, psnr_from_mse
from vicious.models import create_model
from vicious.release.policies import Identity
from vicious.release.purifier import Purifier
from vicious.runs.checkpoints import UnsafeFileError, save_weights
from vicious.seeding import generator, seeded_initialisation

K = 10


def scrambling_purifier(seed: int = 0, scale: float = 5.0) -> Purifier:
    """A purifier whose network moves the log-odds far (the fresh one is the identity): the
    margin, not the network, must keep the label."""
    purifier = Purifier(K)
    with torch.no_grad():
        for parameter in purifier.net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator(seed)) * scale)
    return purifier


def random_outputs(n: int = 500, seed: int = 1) -> torch.Tensor:
    """Logits at several scales, with exact and near ties (one float step) on top."""
    draws = generator(seed)
    logits = torch.randn(n, K, generator=draws) * torch.tensor([0.01, 1.0, 30.0, 1e4]).repeat(n // 4 + 1)[:n, None]
    logits[::5, 3] = logits[::5].amax(dim=1)  # an exact tie: the first index is the label
    top = logits[1::5].amax(dim=1)
    logits[1::5, 7] = torch.nextafter(top, torch.full_like(top, float("inf")))
    return logits


def toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images on a 6-dimensional manifold, and logits that encode them linearly."""
    latent = torch.randn(n, 6, generator=generator(seed))
    images = torch.sigmoid(latent @ (torch.randn(6, 64, generator=generator(99)) * 1.5)).view(n, 1, 8, 8)
    logits = 3 * (images.flatten(1) - 0.5) @ (torch.randn(64, K, generator=generator(98)) / 4)
    return logits, images


def test_the_predicted_class_is_kept_on_every_row():
    logits = random_outputs()
    for seed in range(3):
        purifier = scrambling_purifier(seed)
        released = purifier(logits, "logits")
        assert torch.equal(released.argmax(dim=1), logits.argmax(dim=1))
        gap = released.gather(1, logits.argmax(dim=1, keepdim=True)) - released.scatter(
            1, logits.argmax(dim=1, keepdim=True), float("-inf")).amax(dim=1, keepdim=True)
        assert bool((gap > 0).all()) and float(gap.median()) >= purifier.margin * (1 - 1e-3)
        probabilities = torch.softmax(logits, dim=1)
        as_probabilities = purifier(probabilities, "probabilities")
        assert torch.equal(as_probabilities.argmax(dim=1), probabilities.argmax(dim=1))
        torch.testing.assert_close(as_probabilities.sum(dim=1), torch.ones(len(logits)))
        attributes = purifier(torch.sigmoid(logits), "probabilities", "multilabel")
        assert torch.equal(attributes > 0.5, torch.sigmoid(logits) > 0.5)
        assert torch.equal(purifier(logits, "logits", "multilabel") > 0, logits > 0)


def test_a_fresh_purifier_releases_centred_logits_where_the_margin_holds():
    logits = torch.randn(200, K, generator=generator(2)) * 3
    top2 = logits.topk(2, dim=1).values
    ahead = top2[:, 0] - top2[:, 1] >= 0.1
    released = Purifier(K)(logits, "logits")
    torch.testing.assert_close(released[ahead], (logits - logits.mean(dim=1, keepdim=True))[ahead])
    assert not released.requires_grad  # a release builds no graph


def test_for_training_passes_the_network_gradient():
    purifier = scrambling_purifier(scale=0.3)
    logits = torch.randn(16, K, generator=generator(3), requires_grad=True)
    purifier.for_training(logits, "logits").square().sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    assert all(float(p.grad.abs().sum()) > 0 for p in purifier.net.parameters())


def test_distortion_is_the_kl_divergence():
    logits = torch.randn(50, K, generator=generator(4))
    released = scrambling_purifier(scale=0.3)(logits, "logits")
    p, q = torch.softmax(logits, dim=1).double(), torch.softmax(released, dim=1).double()
    expected = (p * (p / q).log()).sum(dim=1).float()
    torch.testing.assert_close(distortion(logits, released, "logits"), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(distortion(p.float(), q.float(), "probabilities"), expected, atol=1e-5, rtol=1e-4)
    a, b = torch.sigmoid(logits).double(), torch.sigmoid(released).double()
    bernoulli = (a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log()).sum(dim=1).float()
    torch.testing.assert_close(distortion(logits, released, "logits", "multilabel"), bernoulli, atol=1e-5, rtol=1e-4)


def fresh_decoder_psnr(policy, server, held) -> float:
    """PSNR of an independent shadow decoder trained on the server's released outputs, on held-out images."""
    released, held_released = policy(server[0], "logits"), policy(held[0], "logits")
    with seeded_initialisation(7):
        decoder = ShadowDecoder(K, (1, 8, 8), 256)
    fit_decoder(decoder, released, server[1], epochs=60, seed=7, validation=(held_released[:256], held[1][:256]),
                patience=8)
    return float(psnr_from_mse(mse(held[1][256:], decode(decoder, held_released[256:])).mean()))


def test_a_fitted_purifier_hides_the_images_from_a_fresh_decoder():
    user, server, held = toy(512, 1), toy(1024, 2), toy(512, 3)
    purifier = fit_purifier(*user, "logits", epochs=60, seed=0, distortion_weight=0.3)
    identity, purified = fresh_decoder_psnr(Identity(), server, held), fresh_decoder_psnr(purifier, server, held)
    assert purified < identity - 1.5, (identity, purified)
    assert torch.equal(purifier(held[0], "logits").argmax(dim=1), held[0].argmax(dim=1))
    assert float(distortion(held[0], purifier(held[0], "logits"), "logits").mean()) < 0.2


def test_fitting_is_deterministic_given_the_seed():
    outputs, images = toy(64, 5)
    first, again = (fit_purifier(outputs, images, "probabilities", epochs=2, seed=3, distortion_weight=0.1)
                    for _ in range(2))
    other = fit_purifier(outputs, images, "probabilities", epochs=2, seed=4, distortion_weight=0.1)
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(first.net.state_dict().values(), other.net.state_dict().values()))


def test_a_saved_purifier_loads_back_identical(tmp_path):
    purifier = Purifier(K, hidden=24, margin=0.25)
    with torch.no_grad():
        for parameter in purifier.net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator(6)))
    save_purifier(purifier, tmp_path / "purifier.safetensors")
    loaded = load_purifier(tmp_path / "purifier.safetensors")
    assert (loaded.num_outputs, loaded.hidden, loaded.margin) == (K, 24, 0.25)
    logits = random_outputs(100)
    assert torch.equal(loaded(logits, "logits"), purifier(logits, "logits"))


def test_a_file_that_is_not_a_purifier_is_refused_in_one_line(tmp_path):
    pickle = tmp_path / "purifier.pt"
    torch.save(Purifier(K).net.state_dict(), pickle)
    other = tmp_path / "decoder.safetensors"
    save_weights(ShadowDecoder(K, (1, 8, 8), 16), other)
    altered = tmp_path / "altered.safetensors"
    save_weights(Purifier(K).net, altered, {"kind": "vicious-purifier", "num_outputs": str(K), "hidden": "1e9",
                                            "margin": "0.1"})
    for path, reason in ((pickle, "not a safetensors"), (other, "not a purifier"), (altered, "hidden")):
        with pytest.raises(UnsafeFileError, match=reason) as refused:
            load_purifier(path)
        message = str(refused.value)
        assert "\n" not in message and ("save_purifier" in message or "save the purifier again" in message)


def test_evaluate_policy_measures_a_purifier_like_any_policy():
    outputs, images = toy(96, 8)
    images16 = torch.nn.functional.interpolate(images, size=16)
    with seeded_initialisation(0):
        decoder = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=K, image_size=16,
                               input_form="raw").eval()
    purifier = scrambling_purifier(scale=0.3)
    labels = outputs.argmax(dim=1)
    result = evaluate_policy(purifier, decoder, "logits", test=(outputs[:32], images16[:32], labels[:32]),
                             train=(outputs[32:], images16[32:]), statistics=ImageStatistics.fit(images16[32:]),
                             retrain_epochs=1)
    assert result["policy"] == "purifier" and result["accuracy"] == 1.0
    expected = float(total_variation(outputs[:32], purifier(outputs[:32], "logits"), "logits").mean())
    assert result["distortion"] == pytest.approx(expected) and result["distortion"] > 0
    assert set(result["retrained"]) == {"r_principal", "psnr"}
