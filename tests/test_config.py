import pytest
import yaml

from vicious.config.presets import PRESETS, get_preset, preset_names
from vicious.config.schema import ConfigError, RunConfig, apply_overrides, load_config, save_config


def test_overrides_are_typed_and_validated():
    config = apply_overrides(RunConfig(), ["loss.beta_r=2", "train.epochs=7", "data.attributes=[1, 'Smiling']"])
    assert config.loss.beta_r == 2.0 and config.train.epochs == 7
    assert config.data.attributes == [1, "Smiling"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=abc", "train.epochs: Input should be a valid integer"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=0", "greater than or equal to 1"),
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("loss.beta_r=-1", "loss.beta_r"),
        ("model.depth=12", "6n \\+ 4"),
        ("train=3", "section"),
        ("epochs", "key=value"),
        ("output=logits", "output"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [override])


def test_regimes_constrain_the_loss_weights():
    with pytest.raises(ConfigError, match="beta_c=0"):
        apply_overrides(RunConfig(), ["regime=autoencoder"])
    with pytest.raises(ConfigError, match="beta_r > 0"):
        apply_overrides(RunConfig(), ["loss.beta_r=0"])


def test_config_round_trips_and_refuses_other_versions(tmp_path):
    config = get_preset("cifar100-vicious-softmax")
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    values = yaml.safe_load((tmp_path / "config.yaml").read_text())
    values["version"] = "9.3.0"
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="written by vicious 9.3.0"):
        load_config(tmp_path / "old.yaml")


def test_presets_follow_the_paper():
    assert len(PRESETS) == (5 + 14) * 3 * 2 * 2
    mnist, fashion = get_preset("mnist-vicious"), get_preset("fashion-mnist-honest-softmax")
    assert (mnist.model.depth, mnist.model.width) == (28, 1)
    assert (fashion.model.depth, fashion.model.width, fashion.output) == (28, 5, "softmax")
    assert fashion.train.batch_size == 250 and fashion.train.lr == 1e-3 and fashion.data.augment
    assert get_preset("celeba-k15-autoencoder").loss.beta_c == 0
    assert get_preset("celeba-k15-autoencoder").data.attributes == "k15"
    assert "fashion-mnist-vicious-small" in preset_names("fashion-mnist-*-small")
    with pytest.raises(ConfigError, match="did you mean"):
        get_preset("fashion-mnist-viscious")


def test_a_hand_written_config_overrides_the_preset_then_set_overrides_it(tmp_path, capsys):
    from vicious.cli import main

    (tmp_path / "mine.yaml").write_text("train:\n  epochs: 3\nloss:\n  beta_r: 5\n")  # no version: fine
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--config", str(tmp_path / "mine.yaml"),
                 "--set", "train.epochs=4", "--set", "train.lr=1e-4", "--print-config"]) == 0
    printed = capsys.readouterr().out
    config = load_config_text(tmp_path, printed)
    small = get_preset("fashion-mnist-vicious-small")
    # The preset's values where the file is silent, the file's over them, --set over both.
    assert (config.model.depth, config.train.batch_size, config.preset) == (10, 128, "fashion-mnist-vicious-small")
    assert config.loss.beta_r == 5.0 and config.train.epochs == 4 and config.train.lr == 0.0001
    assert config.data == small.data and config.model == small.model
    # The printed config is complete: it loads back unchanged with no preset, and prints the same.
    assert main(["train", "--config", str(tmp_path / "printed.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_a_config_naming_a_preset_starts_from_it_and_presets_print_as_yaml(tmp_path, capsys):
    from vicious.cli import main

    (tmp_path / "mine.yaml").write_text("preset: mnist-honest-small\ntrain:\n  epochs: 2\n")
    assert main(["train", "--config", str(tmp_path / "mine.yaml"), "--print-config"]) == 0
    config = load_config_text(tmp_path, capsys.readouterr().out)
    expected = apply_overrides(get_preset("mnist-honest-small"), ["train.epochs=2"])
    assert config == expected
    assert main(["presets", "cifar10-vicious-small", "--yaml"]) == 0
    assert load_config_text(tmp_path, capsys.readouterr().out) == get_preset("cifar10-vicious-small")
    (tmp_path / "typo.yaml").write_text("train:\n  epoch: 2\n")
    assert main(["train", "--config", str(tmp_path / "typo.yaml"), "--print-config"]) == 2
    assert "typo.yaml: unknown config key 'train.epoch'; did you mean 'train.epochs'?" in capsys.readouterr().err


def load_config_text(folder, text):
    (folder / "printed.yaml").write_text(text)
    return load_config(folder / "printed.yaml")


def test_a_key_an_older_config_lacks_counts_as_its_default():
    from vicious.config.schema import config_differences

    wanted = get_preset("fashion-mnist-vicious-small").model_dump()
    saved = {section: dict(values) if isinstance(values, dict) else values for section, values in wanted.items()}
    del saved["release"]  # written before release policies could be trained through
    del saved["loss"]["beta_ent"]
    assert config_differences(saved, wanted) == []
    wanted["release"]["policy"] = "topk"
    assert config_differences(saved, wanted) == ["release.policy: saved 'none', given 'topk'"]
