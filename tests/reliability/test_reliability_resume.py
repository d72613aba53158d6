"""No lost work: a training killed with SIGKILL at any moment, then resumed with
``--resume``, ends with exactly the weights and metrics of an uninterrupted run.

All runs are real ``vicious train`` processes on the CPU with one thread; the
references and the runs to be killed start together, so the module costs about three
process start-ups of wall time.
"""

from __future__ import annotations

import pytest
from reliability_helpers import TINY, assert_same_weights, finish, kill_when_hung, launch, metrics, weights

from vicious.runs.checkpoints import load_state

VICIOUS = ["train", "--preset", "fashion-mnist-vicious-small", *TINY]
HONEST = ["train", "--preset", "fashion-mnist-honest-small", *TINY, "--set", "train.decoder_epochs=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (run dir, what it held at each kill)} for the references and the killed runs.

    * vicious: killed mid-epoch (epoch 1, after two optimiser steps), resumed with the
      same command plus --resume and killed again while publishing epoch 1's
      last.ckpt (temporary file written, rename not done), resumed with only --resume
      and stopped by SIGTERM (epoch 1, batch 1), resumed again to the end.
    * honest: killed inside its second phase (the post-hoc decoder, epoch 1, batch 1).
    """
    processes = []
    try:
        yield _interrupt_and_resume(tmp_path_factory.mktemp("resume"), processes)
    finally:  # a failed test leaves no process sleeping at its hang point
        for process in processes:
            if process.exitcode is None:
                process.kill()


def _interrupt_and_resume(tmp, processes):
    def launch_(*args, **kwargs):
        processes.append(launch(*args, tmp, **kwargs))
        return processes[-1]

    vicious, honest = str(tmp / "vicious-killed"), str(tmp / "honest-killed")
    references = [launch_([*VICIOUS, "--out", str(tmp / "vicious-reference")]),
                  launch_([*HONEST, "--out", str(tmp / "honest-reference")])]
    first_vicious = launch_([*VICIOUS, "--out", vicious], hang_at="batch:joint:1:2")
    first_honest = launch_([*HONEST, "--out", honest], hang_at="batch:decoder:1:1")
    kill_when_hung(first_vicious)
    at_kills = {"vicious-killed": [_state(tmp / "vicious-killed")]}
    second_vicious = launch_([*VICIOUS, "--out", vicious, "--resume"], hang_at="publish:last.ckpt.safetensors:1")
    kill_when_hung(first_honest)
    at_kills["honest-killed"] = [_state(tmp / "honest-killed")]
    last_honest = launch_(["train", "--out", honest, "--resume"])
    kill_when_hung(second_vicious)
    at_kills["vicious-killed"].append(_state(tmp / "vicious-killed"))
    # only --resume: the run's own config.yaml is used
    finish(launch_(["train", "--out", vicious, "--resume"], hang_at="sigterm:joint:1:1"), status=143)
    at_kills["vicious-killed"].append(_state(tmp / "vicious-killed"))
    last_vicious = launch_(["train", "--out", vicious, "--resume"])
    for process in [*references, last_honest, last_vicious]:
        finish(process)
    names = ["vicious-reference", "honest-reference", "vicious-killed", "honest-killed"]
    return {name: (tmp / name, at_kills.get(name)) for name in names}


def _state(run):
    """What a killed run left behind."""
    def epoch(path):
        return load_state(path)["epoch"] if path.exists() else None

    checkpoints = run / "checkpoints"
    return {
        "finished_files": sorted(p.name for p in run.glob("*.safetensors")),
        "joint_last_epoch": epoch(checkpoints / "joint" / "last.ckpt.safetensors"),
        "decoder_last_epoch": epoch(checkpoints / "decoder" / "last.ckpt.safetensors"),
        "classifier_phase_done": (checkpoints / "classifier" / "selected.safetensors").exists(),
        "temporary_files": sorted(p.name for p in checkpoints.rglob(".*.tmp")),
    }


def test_the_kills_happened_where_intended(runs):
    mid_epoch, while_saving, terminated = runs["vicious-killed"][1]
    # Epoch 0 saved, epoch 1 under way, nothing finished.
    assert mid_epoch["joint_last_epoch"] == 0 and mid_epoch["finished_files"] == []
    assert mid_epoch["temporary_files"] == []
    # Epoch 1's checkpoint fully written to a temporary file, never renamed:
    # last.ckpt is still the complete one of epoch 0.
    assert while_saving["joint_last_epoch"] == 0 and while_saving["finished_files"] == []
    assert len(while_saving["temporary_files"]) == 1 and while_saving["temporary_files"][0].startswith(".last.ckpt.safetensors.")
    # SIGTERM (exit status 143, not 0 as if finished): nothing new saved, nothing finished.
    assert terminated["joint_last_epoch"] == 0 and terminated["finished_files"] == []
    (honest,) = runs["honest-killed"][1]
    assert honest["classifier_phase_done"] and honest["decoder_last_epoch"] == 0 and honest["finished_files"] == []


def test_killed_twice_then_resumed_reaches_identical_weights_and_metrics(runs):
    run, _ = runs["vicious-killed"]
    reference, _ = runs["vicious-reference"]
    assert_same_weights(weights(run), weights(reference))
    assert metrics(run) == metrics(reference)
    assert (run / "per_sample.csv").read_text() == (reference / "per_sample.csv").read_text()


def test_honest_killed_in_the_decoder_phase_resumes_there(runs):
    run, _ = runs["honest-killed"]
    reference, _ = runs["honest-reference"]
    assert_same_weights(weights(run), weights(reference))
    assert metrics(run) == metrics(reference)


def test_every_session_keeps_its_log(runs):
    run, _ = runs["vicious-killed"]
    # One CSV log per session (the second was killed before logging anything):
    # resuming never overwrites what was logged before.
    assert len(list((run / "logs" / "joint").glob("*/metrics.csv"))) >= 2


def test_a_run_moved_to_another_folder_resumes_with_its_selection(tmp_path, monkeypatch):
    """Lightning drops the best-so-far score when a checkpoint's folder changed; a run
    interrupted, moved (or copied to another machine) and resumed must still select
    the same epoch. Here the validation score is made to grow with the epoch, so
    epoch 0 is the best and only a remembered score keeps it selected."""
    import torch

    from vicious.attack import lightning_module
    from vicious.config.presets import get_preset
    from vicious.config.schema import apply_overrides
    from vicious.runs.training import train_run

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
