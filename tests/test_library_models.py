"""model.classifier=torchvision:<name>: another library's network trained as the vicious F,
evaluated, and audited from its weights file alone."""

import json
import re

import pytest
import torch

from vicious.cli import main
from vicious.config.schema import ConfigError, RunConfig
from vicious.defences import SuiteSettings
from vicious.defences.calibration import Calibration, Reference
from vicious.models import LibraryClassifier
from vicious.runs.checkpoints import read_safetensors_metadata
from vicious.runs.layout import build_models, load_splits

pytest.importorskip("torchvision")

TINY = ["--set", "data.train_limit=200", "--set", "data.val_limit=100", "--set", "data.test_limit=100",
        "--set", "train.epochs=1", "--set", "train.batch_size=50", "--set", "train.progress=false",
        "--set", "model.depth=10"]
AUDIT = SuiteSettings(num_images=64, sensitivity_images=16, shadow_epochs=2, shadow_hidden=16)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("resnet") / "run"
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--out", str(run), *TINY,
                 "--set", "model.classifier=torchvision:resnet18"]) == 0
    return run


def test_a_torchvision_resnet_trains_as_vicious_and_is_evaluated(resnet_run):
    metrics = json.loads((resnet_run / "metrics.json").read_text())
    assert metrics["num_test_images"] == 100 and 0 <= metrics["accuracy"] <= 1 and metrics["psnr"] > 0
    metadata = read_safetensors_metadata(resnet_run / "classifier.safetensors")
    assert metadata["classifier"] == "torchvision:resnet18" and metadata["output"] == "raw"
    # The weights hold torchvision's ResNet-18 (11.2M parameters with a 10-way head), not a WRN.
    state = __import__("safetensors.torch", fromlist=["load_file"]).load_file(resnet_run / "classifier.safetensors")
    assert sum(t.numel() for k, t in state.items() if k.startswith("backbone.") and "running" not in k
               and "num_batches" not in k) == 11_181_642
    assert main(["evaluate", str(resnet_run)]) == 0


def test_the_weights_file_alone_is_audited(resnet_run, tmp_path):
    honest = {"output_statistics": {"logit_norm": [1.9, 2.1, 2.0]},
              "sensitivity": {"within_class_contrast": [4.0, 4.4, 4.2]},
              "excess_leakage": {"psnr_gap": [1.5, 1.8, 1.6]}}
    refs = [Reference(name=f"honest-{i}", accuracy=0.8) for i in range(3)]
    calibration = tmp_path / "calibration.json"
    Calibration.from_scores("fashion-mnist", 32, AUDIT, honest, refs).save(calibration)
    weights = tmp_path / "elsewhere" / "classifier.safetensors"  # no run folder beside it
    weights.parent.mkdir()
    weights.write_bytes((resnet_run / "classifier.safetensors").read_bytes())
    out = tmp_path / "audit"
    assert main(["audit", str(weights), "--data", "fashion-mnist", "--calibration", str(calibration),
                 "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["num_outputs"] == 10 and audit["input_shape"] == [1, 32, 32]
    # The audit saw the run's classifier: the accuracy on its own test images matches evaluate's
    # to within what 64 audit images of another subset allow.
    assert 0 <= audit["accuracy"] <= 1 and audit["verdict"] in ("likely-honest", "inconclusive", "likely-vicious")


def test_grey_images_reach_torchvision_as_three_equal_channels():
    model = LibraryClassifier("torchvision:resnet18", in_channels=1, num_outputs=4, mean=(0.5,), std=(0.25,)).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        direct = model.backbone(((x - 0.5) / 0.25).repeat(1, 3, 1, 1))
        torch.testing.assert_close(model(x), direct)


@pytest.mark.parametrize("name, message", [
    ("torchvision:resnet1", "torchvision has no classifier 'resnet1' (e.g. resnet101"),
    ("torchvision:inception_v3", "torchvision:inception_v3 cannot take 32×32 images"),
])
def test_an_unusable_library_model_is_one_line(name, message):
    config = RunConfig.model_validate({"model": {"classifier": name}, "data": {"train_limit": 100, "val_limit": 50,
                                                                                 "test_limit": 50}})
    with pytest.raises(ConfigError, match=re.escape("model.classifier: " + message)):
        build_models(config, load_splits(config))


def test_the_classifier_key_is_validated():
    from vicious.config.schema import validate_config

    with pytest.raises(ConfigError, match="model.classifier"):
        validate_config({"model": {"classifier": "torchvision:resnet18; rm"}})
    # module:callable is a network of the user's own: a config may name it, but only the user
    # can let it be imported (tests/test_own_models.py).
    config = validate_config({"model": {"classifier": "os:system"}, "data": {"train_limit": 100, "val_limit": 50,
                                                                             "test_limit": 50}})
    with pytest.raises(ConfigError, match="os:system is code of your own.*--allow-import os"):
        build_models(config, load_splits(config))


def test_a_timm_classifier_builds_for_grey_images_where_timm_is_installed():
    pytest.importorskip("timm")
    model = LibraryClassifier("timm:resnet18", in_channels=1, num_outputs=7).eval()
    assert model.repeat_to is None  # timm builds its stem for one channel itself
    assert model.backbone.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(3, 1, 32, 32)).shape == (3, 7)
