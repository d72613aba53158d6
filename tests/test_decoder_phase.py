"""The honest decoder phase without augmentation trains on F's outputs computed once: the same
loss, batch for batch, as computing them through the frozen F at every step."""

import torch

from vicious.attack.lightning_module import AttackModule
from vicious.config.schema import LossConfig, TrainConfig
from vicious.models import create_model
from vicious.runs.hardware import NumericPlan
from vicious.runs.training import frozen_outputs


def _pair():
    torch.manual_seed(0)
    classifier = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10,
                              mean=(0.3,), std=(0.3,))
    decoder = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=10, input_norm=True)
    # A classifier with non-trivial running statistics, as one trained.
    classifier.train()
    with torch.no_grad():
        classifier(torch.rand(64, 1, 32, 32))
    return classifier, decoder


def test_precomputed_outputs_give_the_loss_of_the_frozen_classifier():
    classifier, decoder = _pair()
    images = torch.randint(0, 256, (48, 1, 32, 32), dtype=torch.uint8)
    outputs = frozen_outputs(classifier, images, TrainConfig(eval_batch_size=20, accelerator="cpu"),
                             NumericPlan("32-true", channels_last=True))
    with torch.no_grad():
        expected = classifier.eval()(images.float() / 255)
    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=1e-5)

    labels = torch.randint(0, 10, (48,))
    common = dict(phase="decoder", loss=LossConfig(), lr=1e-3, augment=False)
    through_f = AttackModule(classifier, decoder, **common)
    given = AttackModule(classifier, decoder, **common, outputs_given=True)
    for module in (through_f, given):
        module.log = lambda *a, **k: None  # no Trainer here
        module.decoder.eval()  # same BatchNorm behaviour for both calls
    loss_through_f = through_f.training_step((images, labels), 0)
    loss_given = given.training_step((images, outputs), 0)
    torch.testing.assert_close(loss_given, loss_through_f, atol=1e-5, rtol=1e-5)
