"""Accuracy on hand-made multiclass and multilabel cases."""

import numpy as np
import pytest
import torch

from vicious.metrics import accuracy, mean_accuracy, per_attribute_accuracy


def test_multiclass_top1():
    logits = torch.tensor(
        [
            [2.0, 1.0, 0.0],  # argmax 0
            [0.0, 3.0, 1.0],  # argmax 1
            [0.5, 0.1, 0.4],  # argmax 0
            [-1.0, -2.0, -0.5],  # argmax 2
        ]
    )
    labels = torch.tensor([0, 2, 0, 2])
    assert accuracy(logits, labels).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert float(mean_accuracy(logits, labels)) == pytest.approx(0.75)
    assert accuracy(logits, labels.to(torch.int32)).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_multiclass_ties_go_to_lowest_index():
    logits = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1])).tolist() == [1.0, 0.0]


def test_multilabel_threshold_at_zero():
    logits = torch.tensor([[0.3, -0.2, 0.0], [-1.0, 2.0, 1e-6], [5.0, 5.0, -5.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # logit 0.0 is negative (not > 0): predicted 0
    expected = [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    assert accuracy(logits, labels).tolist() == expected
    assert per_attribute_accuracy(logits, labels).tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert float(mean_accuracy(logits, labels)) == pytest.approx(7 / 9)
    assert accuracy(logits, labels.bool()).tolist() == expected


@pytest.mark.parametrize(
    "logits, labels, fragment",
    [
        (torch.zeros(3), torch.tensor([0, 1, 2]), "logits must have 2 dimensions"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), "indices must lie in [0, 1]"),
        (torch.zeros(3, 2), torch.tensor([0, -1, 1]), "indices must lie in [0, 1]"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), "labels has 2 entries"),
        (torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), "must be integer class indices"),
        (torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.long), "must be float 0/1"),
        (torch.zeros(3, 2), torch.full((3, 2), 0.5), "only 0 and 1"),
        (torch.zeros(3, 2), torch.ones(3, 3), "shape of logits"),
        (torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 1, 1]), "expected floating point"),
        (torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), "NaN"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "empty"),
    ],
)
def test_accuracy_errors(logits, labels, fragment):
    with pytest.raises(ValueError) as info:
        accuracy(logits, labels)
    assert fragment in str(info.value)


def test_per_attribute_needs_multilabel():
    with pytest.raises(ValueError, match="multilabel"):
        per_attribute_accuracy(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_the_unchecked_kernel_agrees_with_numpy_and_with_accuracy():
    from vicious.metrics import correct_predictions

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 6)).astype(np.float32)
    classes = rng.integers(0, 6, 40)
    attributes = (rng.random((40, 6)) > 0.5).astype(np.float32)
    expected_classes = (logits.argmax(axis=1) == classes).astype(np.float32)
    expected_attributes = ((logits > 0) == (attributes > 0.5)).astype(np.float32)
    for labels, expected in ((torch.from_numpy(classes), expected_classes),
                             (torch.from_numpy(attributes), expected_attributes)):
        got = correct_predictions(torch.from_numpy(logits), labels)
        np.testing.assert_array_equal(got.numpy(), expected)
        torch.testing.assert_close(got, accuracy(torch.from_numpy(logits), labels))
