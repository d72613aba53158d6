"""No lost work: a training killed with SIGKILL at any moment, then resumed with
``--resume``, ends with exactly the weights and metrics of an uninterrupted run.

All runs are real ``vicious train`` processes on the CPU with one thread, started
together so that the whole module costs about one run's wall time per stage.
"""

from __future__ import annotations

import pytest
from reliability_helpers import TINY, assert_same_weights, finish, kill_when_hung, launch, metrics, weights

from vicious.experiments.checkpoints import load_state

VICIOUS = ["train", "--preset", "fashion-mnist-vicious-small", *TINY]
HONEST = ["train", "--preset", "fashion-mnist-honest-small", *TINY, "--set", "train.decoder_epochs=2"]

# name: (arguments, where the process is killed)
KILLED = {
    # mid-epoch: epoch 1 (the second) after two optimiser steps; last.ckpt holds epoch 0
    "vicious-mid-epoch": (VICIOUS, "batch:joint:1:2"),
    # while publishing the second last.ckpt: the temporary file is written, the rename not done
    "vicious-during-save": (VICIOUS, "publish:last.ckpt:2"),
    # honest regime, inside its second phase (the post-hoc decoder), epoch 1, batch 1
    "honest-decoder-phase": (HONEST, "batch:decoder:1:1"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Reference runs and killed-then-resumed runs; returns {name: (run dir, state at the kill)}."""
    tmp = tmp_path_factory.mktemp("resume")
    references = {name: launch([*args, "--out", str(tmp / name)], tmp)
                  for name, args in (("vicious-reference", VICIOUS), ("honest-reference", HONEST))}
    killed = {name: launch([*args, "--out", str(tmp / name)], tmp, hang_at)
              for name, (args, hang_at) in KILLED.items()}
    at_kill = {}
    for name, process in killed.items():
        kill_when_hung(process)
        at_kill[name] = _state(tmp / name)
    resumed = {
        # the same command again plus --resume ...
        "vicious-mid-epoch": launch([*VICIOUS, "--out", str(tmp / "vicious-mid-epoch"), "--resume"], tmp),
        # ... or only --resume: the run's own config.yaml is used
        "vicious-during-save": launch(["train", "--out", str(tmp / "vicious-during-save"), "--resume"], tmp),
        "honest-decoder-phase": launch(["train", "--out", str(tmp / "honest-decoder-phase"), "--resume"], tmp),
    }
    for process in [*references.values(), *resumed.values()]:
        finish(process)
    return {name: (tmp / name, at_kill.get(name)) for name in [*references, *resumed]}


def _state(run):
    """What a killed run left behind."""
    def epoch(path):
        return load_state(path)["epoch"] if path.exists() else None

    checkpoints = run / "checkpoints"
    return {
        "finished_files": sorted(p.name for p in run.glob("*.safetensors")),
        "joint_last_epoch": epoch(checkpoints / "joint" / "last.ckpt"),
        "decoder_last_epoch": epoch(checkpoints / "decoder" / "last.ckpt"),
        "classifier_phase_done": (checkpoints / "classifier" / "selected.safetensors").exists(),
        "temporary_files": sorted(p.name for p in checkpoints.rglob(".*.tmp")),
    }


def test_killed_mid_epoch_resumes_to_identical_weights_and_metrics(runs):
    run, state = runs["vicious-mid-epoch"]
    # The kill really happened mid-run: epoch 0 saved, nothing finished.
    assert state["joint_last_epoch"] == 0 and state["finished_files"] == []
    reference, _ = runs["vicious-reference"]
    assert_same_weights(weights(run), weights(reference))
    assert metrics(run) == metrics(reference)
    assert (run / "per_sample.csv").read_text() == (reference / "per_sample.csv").read_text()


def test_killed_while_saving_keeps_the_previous_checkpoint(runs):
    run, state = runs["vicious-during-save"]
    # The new checkpoint was fully written to a temporary file but never renamed:
    # last.ckpt is still the complete one of epoch 0.
    assert state["joint_last_epoch"] == 0 and state["finished_files"] == []
    assert len(state["temporary_files"]) == 1 and state["temporary_files"][0].startswith(".last.ckpt.")
    reference, _ = runs["vicious-reference"]
    assert_same_weights(weights(run), weights(reference))
    assert metrics(run) == metrics(reference)


def test_honest_killed_in_the_decoder_phase_resumes_there(runs):
    run, state = runs["honest-decoder-phase"]
    assert state["classifier_phase_done"] and state["decoder_last_epoch"] == 0
    assert state["finished_files"] == []
    reference, _ = runs["honest-reference"]
    assert_same_weights(weights(run), weights(reference))
    assert metrics(run) == metrics(reference)


def test_the_resumed_session_is_recorded(runs):
    run, _ = runs["vicious-mid-epoch"]
    # One CSV log per session, so resuming never overwrites what was logged before.
    assert len(list((run / "logs" / "joint").glob("*/metrics.csv"))) == 2


def test_a_run_moved_to_another_folder_resumes_with_its_selection(tmp_path, monkeypatch):
    """Lightning drops the best-so-far score when a checkpoint's folder changed; a run
    interrupted, moved (or copied to another machine) and resumed must still select
    the same epoch. Here the validation score is made to grow with the epoch, so
    epoch 0 is the best and only a remembered score keeps it selected."""
    import torch

    import vicious.attack.lightning_module as lightning_module
    from vicious.experiments.config import apply_overrides
    from vicious.experiments.presets import get_preset
    from vicious.experiments.training import train_run

    config = apply_overrides(get_preset("fashion-mnist-vicious-small"), {
        "data.train_limit": 100, "data.val_limit": 50, "data.test_limit": 50, "data.augment": False,
        "train.epochs": 2, "train.batch_size": 50, "train.progress": False, "train.accelerator": "cpu"})
    epoch = {}
    end = lightning_module.AttackModule.on_validation_epoch_end

    def remember_epoch(self):
        epoch["now"] = self.current_epoch
        end(self)

    monkeypatch.setattr(lightning_module.AttackModule, "on_validation_epoch_end", remember_epoch)
    monkeypatch.setattr(lightning_module, "selection_score", lambda *args: torch.tensor(float(epoch["now"])))
    reference = train_run(config, tmp_path / "reference")

    class Crash(Exception):
        pass

    step = lightning_module.AttackModule.training_step

    def crash_in_epoch_1(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise Crash
        return step(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(lightning_module.AttackModule, "training_step", crash_in_epoch_1)
        with pytest.raises(Crash):
            train_run(config, tmp_path / "first-home")
    moved = (tmp_path / "first-home").rename(tmp_path / "second-home")
    train_run(config, moved, resume=True)
    assert_same_weights(weights(moved), weights(reference))
