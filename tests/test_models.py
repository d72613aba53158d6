import pytest
import torch

from vicious.models import create_model, model_names


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_wrn_28_10_has_the_published_parameter_count():
    # Zagoruyko & Komodakis (2016) report 36.5M parameters for WRN-28-10 on CIFAR-10.
    model = create_model("wrn-classifier", depth=28, width=10, in_channels=3, num_outputs=10)
    assert abs(_count(model) / 1e6 - 36.5) < 0.1


@pytest.mark.parametrize("channels,size,k", [(1, 32, 10), (3, 32, 100), (3, 64, 40)])
def test_classifier_and_decoder_shapes_and_ranges(channels, size, k):
    torch.manual_seed(0)
    f = create_model("wrn-classifier", depth=10, width=1, in_channels=channels, num_outputs=k)
    g = create_model("wrn-decoder", depth=10, width=1, out_channels=channels, num_inputs=k, image_size=size)
    x = torch.rand(3, channels, size, size)
    logits = f(x)
    rec = g(logits)
    assert logits.shape == (3, k)
    assert rec.shape == x.shape
    assert rec.min() >= 0 and rec.max() <= 1


def test_classifier_normalises_its_input_inside():
    torch.manual_seed(0)
    plain = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10, mean=(0.0,), std=(1.0,))
    shifted = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10, mean=(0.5,), std=(2.0,))
    shifted.load_state_dict({**plain.state_dict(), "mean": shifted.mean, "std": shifted.std})
    plain.eval(), shifted.eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(shifted(x), plain((x - 0.5) / 2.0))


def test_softmax_decoder_sees_only_probabilities():
    g = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=10, input_form="softmax").eval()
    logits = torch.randn(4, 10)
    # Softmax is invariant to adding a constant to every logit; so must the decoder be.
    torch.testing.assert_close(g(logits), g(logits + 7.0))


def test_multilabel_softmax_decoder_uses_a_sigmoid_per_attribute():
    g = create_model("wrn-decoder", depth=10, width=1, out_channels=3, num_inputs=5,
                     input_form="softmax", task="multilabel").eval()
    logits = torch.randn(4, 5)
    assert not torch.allclose(g(logits), g(logits + 3.0))  # sigmoid is not shift-invariant


def test_unknown_model_and_bad_depth_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet")
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("wrn-classifier", depth=12)
    assert model_names() == ["library-classifier", "own-decoder", "reference-cnn", "reference-mlp", "reference-resnet",
                             "wrn-classifier", "wrn-decoder"]
