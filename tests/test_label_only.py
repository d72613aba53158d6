"""The label-only floor against class means computed image by image."""

import numpy as np
import torch

from vicious.attack.label_only import LabelOnlyDecoder


def test_multiclass_reconstruction_is_the_mean_image_of_the_predicted_class():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 1, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, 4, 60)  # class 4 of 5 never occurs
    decoder = LabelOnlyDecoder(torch.from_numpy(images), torch.from_numpy(labels), num_classes=5)
    logits = torch.from_numpy(rng.standard_normal((20, 5))).float()
    out = decoder(logits).numpy()
    predicted = logits.argmax(dim=1).numpy()
    for row, k in zip(out, predicted):
        members = images[labels == k] if k < 4 else images  # an absent class: the overall mean
        np.testing.assert_allclose(row, members.astype(np.float64).mean(axis=0) / 255, atol=1e-6)
    # Softmax outputs predict the same class, so give the same reconstructions.
    np.testing.assert_array_equal(decoder(torch.softmax(logits, dim=1)).numpy(), out)


def test_multilabel_uses_the_exact_pattern_else_the_nearest_ones():
    images = torch.arange(5 * 4, dtype=torch.float32).view(5, 1, 2, 2) / 20
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.float32)
    decoder = LabelOnlyDecoder(images, labels)
    logits = torch.tensor([
        [2.0, -1.0, -3.0],   # pattern 100: images 0 and 1
        [-1.0, -1.0, -1.0],  # 000: no such image; 100 (x2), 010 and 001 are all one bit away
        [1.0, 1.0, -1.0],    # 110: 100 (x2), 010 and 111 are one bit away
    ])
    out = decoder(logits)
    torch.testing.assert_close(out[0], images[[0, 1]].mean(dim=0))
    torch.testing.assert_close(out[1], images[[0, 1, 2, 3]].mean(dim=0))
    torch.testing.assert_close(out[2], images[[0, 1, 2, 4]].mean(dim=0))
