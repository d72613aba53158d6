import os
import pickle

import pytest
import torch

from vicious.models import create_model
from vicious.runs.checkpoints import UnsafeFileError, load_state, load_weights, save_state, save_weights


def test_nested_training_state_round_trips(tmp_path):
    state = {
        "state_dict": {"w": torch.randn(3, 2), "step": torch.tensor(5)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
        "loops": {"epoch": 3, "ratio": 0.5, "flag": True, "none": None, "pair": (1, "a")},
    }
    save_state(state, tmp_path / "last.ckpt")
    loaded = load_state(tmp_path / "last.ckpt")
    torch.testing.assert_close(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert loaded["optimizer_states"][0]["state"][0]["exp_avg"].shape == (2,)
    assert loaded["loops"] == state["loops"]


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-code-ran",))


def test_a_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, write in (("evil.ckpt", lambda f: pickle.dump(_Planted(), f)),
                        ("evil.safetensors", lambda f: torch.save({"x": _Planted()}, f))):
        with open(name, "wb") as f:
            write(f)
        with pytest.raises(UnsafeFileError, match="pickle"):
            load_state(tmp_path / name)
        model = create_model("wrn-decoder", depth=10, width=1, out_channels=1, num_inputs=10)
        with pytest.raises(UnsafeFileError):
            load_weights(model, tmp_path / name)
    assert not (tmp_path / "planted-code-ran").exists()


def test_weights_of_another_architecture_are_refused(tmp_path):
    small = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10)
    save_weights(small, tmp_path / "f.safetensors")
    other = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=100)
    with pytest.raises(ValueError, match="fc.(weight|bias) has shape"):
        load_weights(other, tmp_path / "f.safetensors")


def test_truncated_file_is_a_clear_error(tmp_path):
    model = create_model("wrn-classifier", depth=10, width=1, in_channels=1, num_outputs=10)
    save_weights(model, tmp_path / "f.safetensors")
    data = (tmp_path / "f.safetensors").read_bytes()
    (tmp_path / "f.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeFileError, match="not a valid safetensors"):
        load_weights(model, tmp_path / "f.safetensors")


def test_lightning_loader_on_a_vicious_checkpoint_says_what_to_use(tmp_path):
    import torch

    from vicious.attack.lightning_module import AttackModule

    path = tmp_path / "last.ckpt"
    save_state({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(TypeError, match=r"is a vicious checkpoint \(safetensors, not a pickle\): open the finished run "
                                        r"with vicious.api.load\(RUN\)"):
        AttackModule.load_from_checkpoint(path)
    # torch.load's own refusal of the same file (safetensors is no pickle) is why the message exists.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
