"""The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/install_telemetry.sh) loads the page a local network serves (the page run_localnet hands to
its server, on the node's telemetry server, adapters/telemetry_http.py); the DOM it built holds
the window table and the SVG learning curve, and its screenshot is a page of the window's size
with the curve's colours drawn (not a blank or error page).

Marker telemetry: `bash scripts/install_telemetry.sh && python3 -m pytest -m telemetry`."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from adapters.telemetry_http import TelemetryServer
from rollproof.localnet import run_localnet
from trainer.service import TrainerConfig

from test_status_page import Dom
from trainer_env import parity_registered

pytestmark = pytest.mark.telemetry

WIDTH, HEIGHT = 1280, 1600
BROWSER_BOUND_S = 120  # a hung browser fails the test; nothing is timed


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        msg = "chromium is not installed; install it with: bash scripts/install_telemetry.sh"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{msg} (CI is set: the telemetry tests must run, not skip)", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local network of two windows (cheaters, a trainer announcing checkpoints) whose status page,
    as run_localnet hands it to the node's server, is served by the node's telemetry server."""
    from verification.model import load_model

    root = tmp_path_factory.mktemp("browsernet")
    pages = []
    registry = CollectorRegistry()
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        cfg = TrainerConfig(heldout_problems=6, heldout_rollouts=2, gate_margin=1.0)
        result = run_localnet(lm, root, windows=2, n_groups=1, trainer_config=cfg, registry=registry,
                              page=pages.append)
    assert result.ok, result.problems
    (page,) = pages
    with TelemetryServer("127.0.0.1", 0, registry=registry, page=page) as server:
        yield server.url, result


def _browse(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={WIDTH},{HEIGHT}", *args, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_BOUND_S)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_chromium_builds_the_window_table_and_the_curve(served, tmp_path):
    url, result = served
    dom = Dom(_browse(tmp_path, url, "--dump-dom").stdout)
    windows = dom.rows("validator-windows", "window")
    assert [int(a["data-window"]) for a, _ in windows] == [w.window for w in reversed(result.windows)]
    last = result.windows[-1]
    reasons = {c[2].split(" ")[0] for a, c in dom.rows("validator-windows", "miner")
               if int(a["data-window"]) == last.window}
    assert reasons == {m["reason"] for m in last.report["miners"]}
    assert "svg" in dom.tags and "script" not in dom.tags
    announced = [p for p in result.publications if p.stage == "announced"]
    assert len(dom.polylines["heldout"]) == len(announced) + 1
    assert len(dom.polylines["signal"]) == len(result.training)
    cps = {int(a["data-version"]): c for a, c in dom.rows("checkpoints", "checkpoint")}
    assert set(cps) == {p.version for p in result.publications} and not dom.notes
    replay = dom.tables["checkpoints"][0][1].index("replay")  # the header row names the column
    assert all(cps[p.version][replay].startswith("replayed") for p in announced)  # the node's replay verdicts


def _near(image: np.ndarray, hex_colour: str, tol: int = 24) -> int:
    """Pixels within tol (per channel, 0..255) of the colour."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image[..., :3].astype(int) - rgb) <= tol).all(axis=-1).sum())


def test_chromium_screenshot_shows_the_page_and_its_curve(served, tmp_path):
    from matplotlib.image import imread

    url, _ = served
    shot = tmp_path / "page.png"
    _browse(tmp_path, url, f"--screenshot={shot}")
    image = (imread(shot) * 255).round().astype(np.uint8)
    assert image.shape[:2] == (HEIGHT, WIDTH)
    colours = np.unique(image[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50, len(colours)  # text, tables, the curve: not a blank page
    background = _near(image, "#f7f8fa", tol=2)
    assert 0.2 * image[..., 0].size < background < 0.95 * image[..., 0].size
    # the learning curve's lines were drawn: held-out reward (blue) and signal rate (orange)
    assert _near(image, "#1f6fd1") > 100 and _near(image, "#e37400") > 100
