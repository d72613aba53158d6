import torch
import torch.nn.functional as nnf

from vicious.attack.objective import output_entropy, reconstruction_loss, task_loss


def test_huber_with_delta_one_is_half_mse_for_pixels_in_unit_range():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    loss = reconstruction_loss(x, y, alpha_huber=1.0, alpha_ssim=0.0, huber_delta=1.0)
    torch.testing.assert_close(loss, 0.5 * ((x - y) ** 2).mean())


def test_reconstruction_loss_is_zero_for_a_perfect_reconstruction():
    x = torch.rand(2, 3, 16, 16)
    loss = reconstruction_loss(x, x, alpha_huber=5.0, alpha_ssim=1.0, huber_delta=1.0)
    assert abs(float(loss)) < 1e-5


def test_multilabel_task_loss_matches_the_weighted_bce_formula():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), (torch.rand(6, 3) > 0.5).float()
    pos_weight = torch.tensor([2.0, 0.5, 1.0])
    p = torch.sigmoid(logits)
    expected = -(pos_weight * labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(task_loss(logits, labels, pos_weight), expected)


def test_multiclass_task_loss_is_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(task_loss(logits, labels), nnf.cross_entropy(logits, labels))


def test_entropy_bounds():
    k = 10
    uniform = output_entropy(torch.zeros(3, k))
    confident = output_entropy(torch.tensor([[50.0] + [0.0] * (k - 1)]))
    torch.testing.assert_close(uniform, torch.log(torch.tensor(float(k))))
    assert confident < 1e-6
    half = output_entropy(torch.zeros(2, 4), multilabel=True)
    torch.testing.assert_close(half, torch.log(torch.tensor(2.0)))
