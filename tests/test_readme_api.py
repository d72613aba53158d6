"""The README's Python API example runs as written, and its numbers hold up."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    marker = "tests/test_readme_api.py runs this block"
    assert marker in text, "the README lost its API example"
    return re.search(r"```python\n(.*?)```", text[text.index(marker):], re.S)[1]


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example(), "README.md", "exec"), scope)
    run, images, outputs, rebuilt = scope["run"], scope["images"], scope["outputs"], scope["rebuilt"]
    top1, rebuilt_top1 = scope["top1"], scope["rebuilt_top1"]
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    assert outputs.shape == (16, 10) and rebuilt.shape == images.shape
    assert 0 <= rebuilt.min() and rebuilt.max() <= 1
    # top-1 of logits, built here by hand: the largest logit kept, every other one 10 below it
    # (vicious.release.policies.TopK); G's reconstructions are of exactly that.
    top, index = outputs.max(dim=1, keepdim=True)
    expected = (top - 10).expand_as(outputs).clone().scatter_(1, index, top)
    torch.testing.assert_close(top1, expected)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt_top1, run.decoder.eval()(expected), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(rebuilt_top1, rebuilt)
    # The same images through the networks directly: the API adds nothing and loses nothing.
    with torch.no_grad():
        direct = run.classifier.eval()(images)
    torch.testing.assert_close(outputs, direct, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "runs/api-demo/metrics.json").is_file()
    assert (tmp_path / "runs/api-demo-audit/audit.json").is_file()
    out = capsys.readouterr().out
    assert "accuracy" in out and "dB from the top one" in out


def test_api_refuses_uint8_or_wrong_shaped_images(tmp_path):
    from vicious import api

    run = api.train("fashion-mnist-vicious-small", tmp_path / "run", evaluate=False,
                    set={"data.train_limit": 200, "data.val_limit": 100, "data.test_limit": 100, "train.epochs": 1,
                         "train.progress": False})
    with pytest.raises(ValueError, match="float"):
        api.reconstruct(run, torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"N×1×32×32"):
        api.reconstruct(run, torch.zeros(2, 3, 32, 32))
