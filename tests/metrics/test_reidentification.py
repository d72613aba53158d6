"""Re-identification on cases with known answers."""

import pytest
import torch

from vicious.metrics import ImageStatistics, reidentification


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(60, 1, 8, 8, generator=g, dtype=torch.float64)


def test_tiny_noise_is_reidentified(images):
    noisy = (images + 1e-3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64)).clamp(0, 1)
    assert reidentification(images, noisy) == {"top1": 1.0, "top5": 1.0}
    stats = ImageStatistics.fit(torch.rand(500, 1, 8, 8, dtype=torch.float64))
    out = reidentification(images, noisy, space="principal", stats=stats, topk=(1, 3, 10))
    assert out == {"top1": 1.0, "top3": 1.0, "top10": 1.0}


def test_shuffled_reconstructions_are_not(images):
    perm = torch.roll(torch.arange(60), 1)  # a derangement: rec i is exactly image i-1
    out = reidentification(images, images[perm])
    assert out["top1"] == 0.0
    assert out["top5"] <= 0.25


def test_known_ranks_on_a_line():
    # ten flat images of levels 0, 0.1, ..., 0.9
    levels = torch.arange(10, dtype=torch.float64) / 10
    x = levels.view(10, 1, 1, 1).expand(10, 1, 3, 3).contiguous()
    near = (x + 0.04).clamp(0, 1)  # own source at 0.04, next level at 0.06
    assert reidentification(x, near, topk=(1,)) == {"top1": 1.0}
    far = x + 0.06  # next level (0.04) is nearer than the source (0.06), except for the last image
    assert reidentification(x, far, topk=(1, 2)) == {"top1": 0.1, "top2": 1.0}


def test_gallery_with_distractors_and_source_index(images):
    distractors = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gallery = torch.cat([images, distractors])
    rec = images.clone()
    assert reidentification(images, rec, gallery=gallery)["top1"] == 1.0
    # a reconstruction equal to a distractor points there
    rec[:10] = distractors[:10]
    assert reidentification(images, rec, gallery=gallery)["top1"] == pytest.approx(50 / 60)
    # sources placed anywhere in the gallery
    order = torch.randperm(100, generator=torch.Generator().manual_seed(3))
    shuffled = gallery[order]
    where = torch.argsort(order)[:60]
    assert reidentification(images, rec, gallery=shuffled, source_index=where)["top1"] == pytest.approx(50 / 60)
    with pytest.raises(ValueError, match="differs from x"):
        reidentification(images, rec, gallery=shuffled)
    with pytest.raises(ValueError, match="fewer than"):
        reidentification(images, rec, gallery=distractors[:5])


def test_small_blocks_give_same_answer(images):
    rec = (images * 0.8 + 0.1).clamp(0, 1)
    assert reidentification(images, rec, max_block_elements=7) == reidentification(images, rec)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"space": "latent"}, "space must be"),
        ({"space": "principal"}, "needs stats"),
        ({"topk": (0,)}, "topk"),
        ({"topk": ()}, "topk"),
        ({"topk": 1.5}, "topk"),
        ({"source_index": torch.arange(60)}, "only meaningful with a gallery"),
    ],
)
def test_errors(images, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        reidentification(images, images, **kwargs)


def test_exact_duplicates_of_the_source_do_not_push_it_down(images):
    # image 0 appears twice; a gallery image at exactly the source's distance is a tie, won by the source
    x = torch.cat([images, images[:1]])
    assert reidentification(x, x, topk=(1,)) == {"top1": 1.0}
    rec = x.clone()
    rec[0] = (rec[0] + 0.01).clamp(0, 1)
    assert reidentification(x, rec, topk=(1,)) == {"top1": 1.0}
