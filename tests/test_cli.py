"""End to end through the command line, with tiny models and data."""

import json
import math

import pytest

from vicious.cli import main

TINY = ["--set", "data.train_limit=300", "--set", "data.val_limit=100", "--set", "data.test_limit=100",
        "--set", "train.epochs=1", "--set", "train.batch_size=100", "--set", "model.depth=10"]


def test_demo_writes_metrics_picture_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "honest" in printed and "vicious" in printed and "R principal" in printed
    for regime in ("honest", "vicious"):
        metrics = json.loads((out / regime / "metrics.json").read_text())
        assert metrics["regime"] == regime and metrics["dataset"] == "fashion-mnist" and metrics["output"] == "raw"
        assert 0 <= metrics["accuracy"] <= 1 and 0 < metrics["mse"] < 1 and -1 <= metrics["ssim"] <= 1
        # PSNR of the set's mean MSE, independently recomputed.
        assert metrics["psnr"] == pytest.approx(-10 * math.log10(metrics["mse"]), rel=1e-6)
        for variant in ("exact", "principal"):
            risk = metrics["risk"][variant]
            assert {"mean", "median", "frac_above_one"} <= set(risk) and 0 <= risk["frac_above_one"] <= 1
    assert (out / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "vicious" in page
    # The label-only floor is a row, measured on the vicious classifier's own predictions.
    summary = json.loads((out / "demo.json").read_text())
    vicious = json.loads((out / "vicious" / "metrics.json").read_text())
    floor = summary["results"]["label only"]
    assert "label only" in printed and floor["psnr"] == pytest.approx(vicious["label_only"]["psnr"])
    assert floor["accuracy"] == vicious["accuracy"]
    # The page leads with the sentence, gives the margins it states, and explains every column.
    gap = vicious["psnr"] - summary["results"]["honest"]["psnr"]
    assert summary["headline"] in page and f"{gap:.1f} dB more than an honest classifier" in summary["headline"]
    assert page.count("<dt>") == 8 and "METHOD.md" not in page
    # metrics.json holds what float32 measures support (7 significant digits), not float64 noise.
    def floats(value):
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return [value] if isinstance(value, float) else []
    written = floats(vicious)
    assert written and all(float(f"{v:.7g}") == v for v in written if math.isfinite(v))
    assert page.count("data:image/png;base64,") == 6  # grid, best, median, worst, distributions, curves


def test_significant_digits_drop_float32_noise():
    from vicious.runs.evaluation import significant

    assert significant({"accuracy": 0.8410000205039978, "ci": [17.488611221313477, 3]}) == {
        "accuracy": 0.841, "ci": [17.48861, 3]}


def test_train_then_evaluate_an_autoencoder(tmp_path, capsys):
    run = tmp_path / "ae"
    args = ["train", "--preset", "fashion-mnist-autoencoder-softmax-small", "--out", str(run), *TINY,
            "--set", "train.progress=false"]
    assert main(args) == 0
    assert "autoencoder on fashion-mnist (softmax outputs)" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    config = (run / "config.yaml").read_text()
    assert "regime: autoencoder" in config and "preset: fashion-mnist-autoencoder-softmax-small" in config
    environment = json.loads((run / "environment.json").read_text())
    assert {"seed", "python", "torch", "vicious", "device"} <= set(environment)
    # A second run into the same folder is refused rather than mixing two runs.
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--preset", "nope", "--out", "x"], "unknown preset 'nope'"),
        (["train", "--preset", "fashion-mnist-vicious-small", "--set", "train.epoch=2", "--out", "x"],
         "unknown config key 'train.epoch'"),
        (["train", "--preset", "fashion-mnist-vicious-small", "--set", "train.epochs=two", "--out", "x"],
         "train.epochs: Input should be a valid integer"),
        (["train", "--preset", "fashion-mnist-vicious-small", "--data-root", "/no/such/folder", "--out", "x"],
         "/no/such/folder"),
        (["evaluate", "/no/such/run"], "not a run directory"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vicious: error: ") and message in err


def test_presets_lists_dataset_model_and_regime(capsys):
    assert main(["presets", "cifar100-*-small"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 3 * 2
    assert all("cifar100" in line and "WRN-10-1" in line for line in lines[1:])

    # The columns line up: each field starts where its header does.
    header, row = lines[0], lines[1]
    for title, value in (("model", "WRN-10-1"), ("regime", "honest")):
        assert row[header.index(title):].startswith(value)


def test_presets_matching_nothing_is_an_error(capsys):
    assert main(["presets", "no-such-*"]) == 2
    assert "no preset matches 'no-such-*'" in capsys.readouterr().err


def test_every_command_describes_itself_and_a_closed_pipe_is_quiet():
    import subprocess
    import sys

    from vicious.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "train", "evaluate", "presets", "table", "report", "sweep", "audit"} <= set(commands)
    assert all(parser.description for parser in commands.values()), "a command without --help description"
    # 'vicious presets | head -1': the reader closes the pipe; no traceback, no error line.
    done = subprocess.run(f"{sys.executable} -m vicious presets | head -1", shell=True, capture_output=True, text=True)
    assert done.stdout.startswith("preset") and done.stderr == ""


def test_help_and_presets_do_not_import_torch():
    # Listing commands or presets must stay instant: torch and torchvision load only when a command needs them.
    import subprocess
    import sys

    code = ("import sys; from vicious.cli import main; main(['presets', 'mnist-*-small']); "
            "print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "mnist-vicious-small" in done.stdout and done.stdout.strip().endswith("[]")
    parser_help = subprocess.run([sys.executable, "-m", "vicious.cli", "--help"], capture_output=True, text=True)
    assert "audit" in parser_help.stdout and "sweep" in parser_help.stdout


def test_a_redirected_log_gets_one_line_per_epoch_and_quiet_gets_none(tmp_path, capsys):
    """stdout here is pytest's capture, not a terminal: no progress bar, one line per epoch;
    the honest classifier phase reports no reconstruction it does not have."""
    two_epochs = [*TINY, "--set", "train.epochs=2", "--no-evaluate"]
    assert main(["train", "--preset", "fashion-mnist-honest-small", "--out", str(tmp_path / "h"), *two_epochs]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == [
        "honest/classifier epoch 1/2", "honest/classifier epoch 2/2", "honest/decoder epoch 1/2",
        "honest/decoder epoch 2/2"]
    assert "\r" not in out
    assert all("accuracy" in line and "mse" not in line for line in lines[:2])
    assert all("mse" in line and "ssim" in line for line in lines[2:])
    assert main(["train", "--preset", "fashion-mnist-vicious-small", "--out", str(tmp_path / "v"), "--quiet",
                 *two_epochs]) == 0
    assert " epoch " not in capsys.readouterr().out
