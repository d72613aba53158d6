"""model.classifier / model.decoder = module:callable: networks of the user's own, imported only
where the user allowed it, trained as a vicious pair, evaluated and reloaded from the run folder."""

import json
import sys
import textwrap

import pytest
import torch

from vicious.cli import main
from vicious.config.schema import ConfigError, validate_config
from vicious.models.own import ENV_VAR, allow_import, is_own
from vicious.runs.checkpoints import read_safetensors_metadata
from vicious.runs.layout import build_models, load_splits, open_run

TINY = ["--set", "data.train_limit=200", "--set", "data.val_limit=100", "--set", "data.test_limit=100",
        "--set", "train.epochs=1", "--set", "train.batch_size=50", "--set", "train.progress=false"]

# Importing the module leaves a mark, so a test can tell whether it was imported at all.
MODULE = textwrap.dedent('''
    import pathlib
    import torch
    from torch import nn

    pathlib.Path(__file__).with_name("imported").touch()

    def cnn(in_channels, num_outputs):
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, num_outputs))

    def mlp_decoder(num_inputs, out_channels, image_size):
        return nn.Sequential(nn.Linear(num_inputs, 64), nn.ReLU(),
                             nn.Linear(64, out_channels * image_size * image_size), nn.Sigmoid(),
                             nn.Unflatten(1, (out_channels, image_size, image_size)))

    def unbounded_decoder(num_inputs, out_channels, image_size):
        return nn.Sequential(nn.Linear(num_inputs, out_channels * image_size * image_size),
                             nn.Unflatten(1, (out_channels, image_size, image_size)))

    def not_a_module(in_channels, num_outputs):
        return "a string"
''')


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mynets.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv(ENV_VAR, raising=False)
    sys.modules.pop("mynets", None)
    yield folder
    sys.modules.pop("mynets", None)


def _config(classifier="mynets:cnn", decoder="mynets:mlp_decoder"):
    return validate_config({"regime": "vicious", "model": {"classifier": classifier, "decoder": decoder},
                            "data": {"train_limit": 100, "val_limit": 50, "test_limit": 50}})


def test_a_config_alone_never_imports_code(own_module):
    config = _config()
    with pytest.raises(ConfigError, match="model.classifier: mynets:cnn is code of your own.*--allow-import mynets"):
        build_models(config, load_splits(config))
    assert not (own_module / "imported").exists() and "mynets" not in sys.modules


def test_trains_as_vicious_and_rebuilds_from_the_run_folder(own_module, tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = ["train", "--preset", "fashion-mnist-vicious-small", "--out", str(run), *TINY,
            "--set", "model.classifier=mynets:cnn", "--set", "model.decoder=mynets:mlp_decoder"]
    assert main(args) == 2 and not run.exists()  # refused before anything is written
    assert main([*args, "--allow-import", "mynets"]) == 0
    assert (own_module / "imported").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_test_images"] == 100 and 0 <= metrics["accuracy"] <= 1
    metadata = read_safetensors_metadata(run / "classifier.safetensors")
    assert metadata["classifier"] == "mynets:cnn" and metadata["decoder"] == "mynets:mlp_decoder"
    # The weights are the user's networks: a Conv2d(1, 8, 3) stem and a 10 -> 64 -> 1024 MLP.
    trained = open_run(run)
    assert trained.classifier.backbone[0].weight.shape == (8, 1, 3, 3)
    assert trained.decoder.network[0].weight.shape == (64, 10)
    x = trained.splits.test.images[:4].float() / 255
    with torch.no_grad():
        rebuilt = trained.decoder(trained.classifier(x))
    assert rebuilt.shape == (4, 1, 32, 32) and 0 <= rebuilt.min() and rebuilt.max() <= 1
    # The audit runs models confined and never imports the user's code: it asks for an export.
    out = tmp_path / "audit"
    assert main(["audit", str(run / "classifier.safetensors"), "--data", "fashion-mnist", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("classifier, decoder, message", [
    ("mynets:not_a_module", "wrn", "model.classifier: mynets:not_a_module(in_channels=1, num_outputs=10) returned "
                                   "a str, not a torch.nn.Module"),
    ("mynets:missing", "wrn", "model.classifier: mynets has no callable 'missing'"),
    ("wrn", "mynets:unbounded_decoder", "model.decoder: mynets:unbounded_decoder gives pixels outside [0, 1]"),
    ("nosuchmodule:cnn", "wrn", "model.classifier: cannot import nosuchmodule"),
])
def test_a_bad_own_network_is_one_line(own_module, monkeypatch, classifier, decoder, message):
    monkeypatch.setenv(ENV_VAR, "mynets,nosuchmodule")
    config = _config(classifier, decoder)
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        build_models(config, load_splits(config))


def test_allowed_modules_and_the_spec_syntax():
    environ = {}
    allow_import(["lab.models"], environ)
    allow_import(["mynets", "lab.models"], environ)
    assert environ[ENV_VAR] == "lab.models,mynets"
    with pytest.raises(ValueError, match="a Python module name"):
        allow_import(["../evil"], environ)
    assert is_own("lab.models:build") and not is_own("torchvision:resnet18") and not is_own("wrn")
    for bad in ("lab/models:build", "mynets:cnn()", "mynets:", ":cnn"):
        with pytest.raises(ConfigError, match="model.classifier"):
            validate_config({"model": {"classifier": bad}})
