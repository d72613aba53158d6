"""The HTML report: self-contained, every image decodes, and it renders in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vicious.cli import main
from vicious.studies.report import build_report

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(tiny_sweep), "-o", str(path), "--num-images", "6"]) == 0
    return path


def test_report_is_self_contained_and_every_image_decodes(report):
    page = report.read_text()
    # Nothing fetched from elsewhere: no external scripts, styles or images.
    assert not re.search(r'(src|href)="(https?:|//|file:)', page) and "<script" not in page
    images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in DATA_URI.findall(page)]
    # scatter + leakage curves + 1 histogram + training curves + 2 seeds' grids + best and worst
    # (one dataset/output group)
    assert len(images) == 8
    for image in images:
        image.load()
        assert image.width > 100 and image.height > 100
        assert np.asarray(image.convert("L"), dtype=float).std() > 5  # not a blank picture
    for section in ("Results per dataset", "Vicious against honest", "Every run, with 95% confidence intervals",
                    "Accuracy against risk", "Leakage against K", "Per-image risk r", "Training curves", "Best and worst",
                    "Each run's config"):
        assert section in page
    assert page.count("<details>") == 4 + 1  # each run's config, and the grid file
    assert "regime: vicious" in page and "re-id@1 principal" in page


def test_reconstruction_grid_has_a_row_per_regime(report):
    page = report.read_text()
    grid_png = DATA_URI.findall(page.split('id="reconstructions"')[1])[0]
    image = Image.open(io.BytesIO(base64.b64decode(grid_png)))
    # Rows: original, honest, vicious, each about as tall as an image is wide (6 columns, 3 rows).
    assert 1.2 < image.width / image.height < 3.5


def test_report_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num-images"):
        build_report(tmp_path, num_images=0)


def _chromium(*args, profile):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri(), profile=tmp_path / "p1")
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (4000, 1280)
    assert pixels.std() > 20  # text, tables and pictures, not a blank page
    assert (pixels < 128).mean() > 0.02  # a real share of dark pixels: text and images were drawn

    # The page as the browser built it: tables laid out, images decoded (naturalWidth > 0).
    probe = tmp_path / "probe.html"
    check = ("<script>addEventListener('load', () => { const ok = [...document.images].filter("
             "i => i.complete && i.naturalWidth > 0).length; document.body.dataset.imagesOk = ok; "
             "document.body.dataset.images = document.images.length; document.body.dataset.tableRows = "
             "document.querySelectorAll('table.results tbody tr').length; "
             "document.body.dataset.tableWidth = document.querySelector('table.results').offsetWidth; });"
             "</script>")
    probe.write_text(report.read_text().replace("</body>", check + "</body>"))
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri(), profile=tmp_path / "p2").stdout
    found = dict(re.findall(r'data-(images-ok|images|table-rows|table-width)="(\d+)"', dom))
    assert found.get("images") == "8" and found.get("images-ok") == "8", found
    # summary 2 + paired 1 + leakage 2 + runs 4 rows
    assert int(found["table-rows"]) == 3 + 1 + 2 + 4 and int(found["table-width"]) > 300
