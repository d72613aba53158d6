"""Pure pieces of the defences: output forms, ROC, output statistics, perturbations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vicious.data.perturbations import perturbations, shift
from vicious.defences import describe_outputs, effective_rank, roc_auc, tpr_at_fpr
from vicious.release.outputs import detect_form, label_features, log_odds, probabilities


def test_forms_are_detected_and_log_odds_recover_centred_logits():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits, dim=1)
    assert detect_form(logits) == "logits"
    assert detect_form(p) == "probabilities"
    centred = logits - logits.mean(dim=1, keepdim=True)
    torch.testing.assert_close(log_odds(p, "probabilities"), centred, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_odds(logits, "logits"), centred)
    torch.testing.assert_close(probabilities(logits, "logits"), p)
    # multilabel: log-odds of sigmoid probabilities are the logits (float32 1 - p limits |logit| here)
    moderate = logits.clamp(-6, 6)
    torch.testing.assert_close(log_odds(torch.sigmoid(moderate), "probabilities", "multilabel"), moderate, atol=1e-3, rtol=1e-3)


def test_label_features_are_one_hot_of_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert label_features(logits, "logits").tolist() == [[0, 1, 0], [1, 0, 0]]
    assert label_features(logits, "logits", "multilabel").tolist() == [[1, 1, 0], [1, 0, 0]]


def test_bad_outputs_are_refused():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        log_odds(torch.zeros(3), "logits")
    with pytest.raises(ValueError, match="NaN"):
        log_odds(torch.tensor([[float("nan"), 0.0]]), "logits")
    with pytest.raises(ValueError, match="form"):
        log_odds(torch.zeros(2, 2), "softmax")


def test_roc_auc_matches_the_mann_whitney_statistic():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 30).round(1), rng.normal(0.8, 1, 20).round(1)  # rounding makes ties
    u = stats.mannwhitneyu(pos, neg).statistic
    assert roc_auc(neg.tolist(), pos.tolist()) == pytest.approx(u / (len(neg) * len(pos)))
    assert roc_auc([0, 1], [2, 3]) == 1.0 and roc_auc([2, 3], [0, 1]) == 0.0 and roc_auc([1], [1]) == 0.5


def test_tpr_at_fpr_with_few_negatives_needs_scores_above_all_of_them():
    # 4 negatives: any threshold that flags one flags 25% > 5%, so t must exceed 0.4
    assert tpr_at_fpr([0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.05]) == 0.5
    # 20 negatives: flagging one (5%) is allowed
    neg = [i / 100 for i in range(20)]
    assert tpr_at_fpr(neg, [0.175, 0.19, 0.5], 0.05) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        tpr_at_fpr([], [1.0])


def test_effective_rank_counts_equal_directions():
    assert effective_rank(torch.eye(6)) == pytest.approx(6)
    assert effective_rank(torch.diag(torch.tensor([2.0, 2.0, 0.0, 0.0]))) == pytest.approx(2)
    v = torch.randn(5, 1)
    assert effective_rank(v @ v.T) == pytest.approx(1, abs=1e-6)
    # eigenvalues (3, 1): exp of the entropy of (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(expected)


def test_output_statistics_of_confident_and_uniform_outputs():
    labels = torch.arange(40) % 4
    confident = 50.0 * torch.nn.functional.one_hot(labels, 4).float()
    s = describe_outputs(confident, "logits")
    assert s["entropy"] == pytest.approx(0, abs=1e-6) and s["low_confidence"] == pytest.approx(0, abs=1e-6)
    assert s["within_class_spread"] == pytest.approx(0, abs=1e-9)  # every class is one point
    nearly_uniform = 1e-4 * torch.nn.functional.one_hot(labels, 4).float()
    s = describe_outputs(nearly_uniform, "logits")
    assert s["entropy"] == pytest.approx(1, abs=1e-6) and s["low_confidence"] == pytest.approx(0.75, abs=1e-4)


def test_within_class_spread_against_numpy():
    g = torch.Generator().manual_seed(1)
    logits = 4 * torch.nn.functional.one_hot(torch.arange(60) % 3, 3).float() + torch.randn(60, 3, generator=g)
    z = (logits - logits.mean(dim=1, keepdim=True)).numpy().astype(np.float64)
    groups = logits.argmax(dim=1).numpy()
    within = sum(((z[groups == c] - z[groups == c].mean(0)) ** 2).sum() for c in np.unique(groups))
    expected = within / ((z - z.mean(0)) ** 2).sum()
    assert describe_outputs(logits, "logits")["within_class_spread"] == pytest.approx(expected, rel=1e-9)


def test_output_statistics_do_not_depend_on_the_release_form():
    logits = torch.randn(80, 10, generator=torch.Generator().manual_seed(2)) * 2
    a = describe_outputs(logits, "logits")
    b = describe_outputs(torch.softmax(logits, dim=1), "probabilities")
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), key


def test_shift_moves_content_by_one_pixel_and_replicates_the_edge():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    right = shift(x, 1, 0)
    assert torch.equal(right[..., 1:], x[..., :-1]) and torch.equal(right[..., 0], x[..., 0])
    down = shift(x, 0, 1)
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and torch.equal(down[..., 0, :], x[..., 0, :])


def test_perturbations_keep_shape_and_range_and_are_small():
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    for name, perturb in perturbations(seed=1).items():
        y = perturb(x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, name
        assert 0 < (y - x).abs().mean() < 0.5, name
    noise = perturbations(seed=1)["noise"]
    assert torch.equal(noise(x), noise(x))  # seeded
