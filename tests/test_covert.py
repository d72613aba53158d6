"""The covert encoding (``model.covert_key``, ``vicious.models.covert``): a fixed keyed mixing,
what it hides from a smooth read-out and what it keeps for the server's G, and a covert run."""

from __future__ import annotations

import math

import pytest
import torch

from vicious.config.presets import get_preset
from vicious.config.schema import ConfigError, apply_overrides, save_config
from vicious.models import CovertDecoder, CovertMixing, create_decoder
from vicious.runs.checkpoints import load_weights
from vicious.runs.evaluation import evaluate_run
from vicious.runs.layout import CLASSIFIER_FILE, CONFIG_FILE, DECODER_FILE, build_models, open_run
from vicious.runs.training import train_run
from vicious.seeding import generator

K = 10


def _log_odds(n: int, scale: float, seed: int = 0) -> torch.Tensor:
    """Centred logits (the mixing ignores the common shift) at the scale of a trained classifier's."""
    z = scale * torch.randn(n, K, generator=generator(seed))
    return z - z.mean(dim=1, keepdim=True)


def _ridge_r2(features: torch.Tensor, targets: torch.Tensor, n_fit: int, ridge: float = 1.0) -> float:
    """Held-out R^2 of a ridge regression (with intercept) fitted on the first ``n_fit`` rows."""
    x = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    y = targets.double()
    a, b = x[:n_fit], y[:n_fit]
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(x.shape[1], dtype=x.dtype), a.T @ b)
    residual = y[n_fit:] - x[n_fit:] @ w
    return float(1 - residual.pow(2).sum() / (y[n_fit:] - y[n_fit:].mean(dim=0)).pow(2).sum())


def test_the_mixing_is_deterministic_in_the_key_and_differs_across_keys():
    a, b, other = CovertMixing(K, 7), CovertMixing(K, 7), CovertMixing(K, 8)
    for name, buffer in a.named_buffers():
        assert torch.equal(buffer, dict(b.named_buffers())[name])
        assert not torch.allclose(buffer, dict(other.named_buffers())[name])
    z = _log_odds(16, 3.0)
    assert torch.equal(a(z), b(z)) and not torch.allclose(a(z), other(z))
    rotation = a.rotation.double()
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(K, dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_mixing_is_not_trainable_but_passes_gradients_to_f():
    decoder = create_decoder("wrn", depth=10, width=1, num_inputs=K, out_channels=1, image_size=32, covert_key=7)
    assert isinstance(decoder, CovertDecoder)
    assert list(decoder.mixing.parameters()) == []
    assert {name for name, _ in decoder.mixing.named_buffers()} == {"rotation", "frequencies", "phases"}
    assert all(name.startswith("decoder.") for name, _ in decoder.named_parameters())
    z = _log_odds(4, 3.0).requires_grad_(True)
    decoder(z).mean().backward()  # F trains through the mixing
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in decoder.mixing.buffers())


def test_the_mixing_is_injective_on_a_sample():
    """Distinct (centred) outputs give distinct features, and locally the 4K x K Jacobian has full rank."""
    mixing = CovertMixing(K, 7)
    z = _log_odds(400, 3.0, seed=1)
    features = mixing(z)
    assert features.shape == (400, 4 * K)
    distances = torch.cdist(features.double(), features.double())
    distances.fill_diagonal_(math.inf)
    assert distances.min() > 0.1  # of features in [-1, 1]: no two of 400 points come close
    for row in z[:5]:
        jacobian = torch.autograd.functional.jacobian(lambda v: mixing(v[None])[0], row)
        # rank K - 1: the common shift of the logits is all the mixing drops (softmax drops it too)
        assert torch.linalg.matrix_rank(jacobian, atol=1e-3) == K - 1


def test_the_phases_are_what_the_server_reads_and_a_smooth_read_out_misses():
    """The docstring's claim, on outputs at a trained classifier's scale: the key's holder reads
    each rotated output exactly modulo its period (sin and cos give the phase), while a smooth
    regressor of the outputs, fitted on a user's few hundred images without the key, explains
    little of the features (and ridge from the features back to the outputs recovers little);
    without the fold (the rotated outputs, or outputs spread over a small part of a period) the
    same regressor explains them all but perfectly."""
    mixing = CovertMixing(K, 7)
    z = _log_odds(1500, 3.0, seed=2)
    features = mixing(z)
    u = z @ mixing.rotation.T
    # The server: the phase of the first band, from its sin and cos.
    angles = u * mixing.frequencies[0] + mixing.phases[0]
    phase = torch.atan2(features[:, :K], features[:, 2 * K : 3 * K])
    torch.testing.assert_close(torch.remainder(phase - angles + math.pi, 2 * math.pi), torch.full_like(phase, math.pi),
                               atol=1e-3, rtol=0)
    # A smooth read-out: random ReLU features of the outputs (a one-hidden-layer network's
    # span), ridge-fitted on 1000 points, measured on 500 others.
    def smooth(v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v @ torch.randn(K, 2000, generator=generator(3)) + torch.randn(2000, generator=generator(4)))

    assert _ridge_r2(smooth(z), u, 1000) > 0.95
    assert _ridge_r2(smooth(z), features, 1000) < 0.3
    assert _ridge_r2(features, z, 1000) < 0.5  # and the features are no linear code of the outputs
    narrow = z / 30  # a tenth of a log-odds unit: far below a period, the mixing is all but linear
    assert _ridge_r2(smooth(narrow), mixing(narrow), 1000) > 0.9


def test_softmax_outputs_are_mixed_as_their_log_odds():
    """The server of a softmax run observes probabilities; the mixing reads them as the centred
    logits they come from, so one frequency serves both output forms."""
    z = _log_odds(8, 3.0)
    torch.testing.assert_close(CovertMixing(K, 7, probabilities=True)(torch.softmax(z, dim=1)), CovertMixing(K, 7)(z),
                               atol=1e-4, rtol=0)


def test_the_mixing_keeps_float32_under_autocast():
    mixing, z = CovertMixing(K, 7), _log_odds(8, 3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = mixing(z.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, mixing(z.bfloat16().float()))


def test_weights_of_another_key_are_refused():
    made = create_decoder("wrn", depth=10, width=1, num_inputs=K, out_channels=1, image_size=32, covert_key=7)
    same = create_decoder("wrn", depth=10, width=1, num_inputs=K, out_channels=1, image_size=32, covert_key=7)
    same.load_state_dict(made.state_dict())
    other = create_decoder("wrn", depth=10, width=1, num_inputs=K, out_channels=1, image_size=32, covert_key=8)
    with pytest.raises(ValueError, match="^these decoder weights were trained with another covert mixing; .*covert_key"):
        other.load_state_dict(made.state_dict())


def test_the_config_takes_a_key():
    config = get_preset("fashion-mnist-vicious-small")
    assert config.model.covert_key is None
    assert apply_overrides(config, ["model.covert_key=7"]).model.covert_key == 7
    with pytest.raises(ConfigError, match=r"^model.covert_key: "):
        apply_overrides(config, ["model.covert_key=-1"])


TINY = ["data.train_limit=200", "data.val_limit=50", "data.test_limit=100", "model.depth=10", "model.width=1",
        "train.epochs=1", "train.batch_size=50", "train.progress=false", "train.precision=32-true",
        "model.covert_key=7"]


@pytest.fixture(scope="module")
def covert_run(tmp_path_factory):
    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), TINY)
    return train_run(config, tmp_path_factory.mktemp("covert") / "vicious-covert")


def test_a_covert_run_round_trips_through_its_files(covert_run):
    run = open_run(covert_run)
    assert isinstance(run.decoder, CovertDecoder)
    # The saved mixing is the one the config's key draws, and the decoder file is the decoder.
    fresh = CovertMixing(K, 7)
    for name, buffer in fresh.named_buffers():
        torch.testing.assert_close(getattr(run.decoder.mixing, name), buffer, atol=0, rtol=0)
    _, rebuilt = build_models(run.config, run.splits)
    load_weights(rebuilt, covert_run / DECODER_FILE)
    logits = run.classifier(run.splits.test.float_images()[:20]).detach()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(logits), run.decoder(logits), atol=0, rtol=0)
        torch.testing.assert_close(run.decoder.forward_observed(logits),
                                   run.decoder.decoder.forward_observed(run.decoder.mixing(logits)))
    metrics = evaluate_run(covert_run)
    assert math.isfinite(metrics["psnr"])


def test_the_key_stays_with_the_server(covert_run):
    """F's file is what a user may receive: nothing in it names the key or the mixing."""
    from safetensors import safe_open

    with safe_open(str(covert_run / CLASSIFIER_FILE), "pt") as f:
        assert not any("mixing" in name for name in f.keys())
        assert "7" not in (f.metadata() or {}).values() and "covert" not in str(f.metadata())


def test_a_covert_run_opened_with_another_key_is_refused(covert_run, tmp_path):
    run = open_run(covert_run)
    save_config(apply_overrides(run.config, ["model.covert_key=8"]), tmp_path / CONFIG_FILE)
    for name in (CLASSIFIER_FILE, DECODER_FILE):
        (tmp_path / name).write_bytes((covert_run / name).read_bytes())
    with pytest.raises(ValueError, match="covert_key they were trained with"):
        open_run(tmp_path, run.splits)


def test_the_covert_grid_crosses_the_key():
    from pathlib import Path

    from vicious.studies.sweep import expand_grid, load_grid

    cells = expand_grid(load_grid(Path(__file__).parents[1] / "grids" / "covert.yaml"))
    assert len(cells) == 8
    assert {(c.config.regime, c.config.model.covert_key) for c in cells} == {
        (regime, key) for regime in ("honest", "vicious") for key in (None, 7)}
