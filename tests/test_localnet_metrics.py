"""`rollproof localnet --metrics-port 0` as an operator runs it (a subprocess, the tiny model, three
windows): its start line names the port, /metrics is scraped while it runs (parsed with
prometheus_client's text parser) and the miner, validator and trainer values move as windows pass;
the status page at / is HTML with the window table. And `rollproof miner run` on the embedded chain
with the page on its own --status-port: the CLI's registry reaches the miner, the page leaves its
"starting" state once the journal is known."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RUN_BOUND_S = 900  # the whole run; a hang, not a slow machine, goes past it
POLL_S = 0.3


def scrape(url: str) -> dict[tuple[str, tuple], float] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None  # between the last window and the exit, or a 503: the next poll
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(snapshot: dict, name: str, **labels: str) -> float:
    """Sum of `name`'s samples whose labels include `labels` (0 before any is recorded)."""
    return sum(v for (n, lab), v in snapshot.items() if n == name and set(labels.items()) <= set(lab))


def test_localnet_metrics_move_as_windows_pass_and_the_page_shows_the_windows(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "BT_"))}
    env.update(HOME=str(tmp_path), COLUMNS="200", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "rollproof.cli", "localnet", "--model", "tiny", "--windows", "3",
                             "--groups", "1", "--workdir", str(tmp_path / "net"), "--metrics-port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    stderr: list[str] = []
    stdout: list[str] = []
    found = threading.Event()
    base: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            stderr.append(line)
            m = re.search(r"metrics at (http://\S+)/metrics and status page at (http://\S+/)", line)
            if m and not found.is_set():
                base.extend(m.groups())
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True).start()
    snapshots: list[dict] = []
    pages: list[bytes] = []
    t0 = time.monotonic()
    try:
        while not found.is_set():
            assert proc.poll() is None, "".join(stderr)[-3000:]
            assert time.monotonic() - t0 < 120, "no start line naming the metrics port"
            time.sleep(0.1)
        metrics_url, page_url = base
        while proc.poll() is None:
            assert time.monotonic() - t0 < RUN_BOUND_S, "localnet ran past its bound"
            snap = scrape(metrics_url + "/metrics")
            if snap is not None:
                snapshots.append(snap)
                if total(snap, "rollproof_validator_miner_verdicts_total") > 0 and len(pages) < 3:
                    with urllib.request.urlopen(page_url, timeout=5) as resp:
                        assert resp.headers["Content-Type"].startswith("text/html")
                        pages.append(resp.read())
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    output = "".join(stdout) + "".join(stderr)
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert len(snapshots) >= 3, f"{len(snapshots)} scrapes"
    first, last = snapshots[0], snapshots[-1]

    # the validator: its window moves through the three windows, verdicts by reason accumulate
    windows_seen = sorted({total(s, "rollproof_window", role="validator") for s in snapshots} - {0})
    assert len(windows_seen) >= 2, windows_seen
    assert total(last, "rollproof_validator_miner_verdicts_total", reason="ok") > \
        total(first, "rollproof_validator_miner_verdicts_total", reason="ok")
    cheats = {dict(lab)["reason"] for (n, lab), v in last.items()
              if n == "rollproof_validator_miner_verdicts_total" and v > 0 and dict(lab).get("reason") != "ok"}
    assert cheats, "no cheater's verdict by reason"
    # the miners: windows committed and tokens generated grow window by window
    committed = [total(s, "rollproof_miner_windows_total", outcome="committed") for s in snapshots]
    assert committed == sorted(committed) and committed[-1] > committed[0], committed
    assert total(last, "rollproof_miner_tokens_total") > total(first, "rollproof_miner_tokens_total")
    # the trainer: windows trained grow
    trained = [total(s, "rollproof_trainer_windows_total") for s in snapshots]
    assert trained == sorted(trained) and trained[-1] > trained[0], trained
    # one value per series: every series is a sample of one registry (no duplicate role label sets)
    assert total(last, "rollproof_build_info", role="validator") == 1

    # the page: HTML with the window table, a window the validator scored in it
    assert pages, "no page fetched after the first scored window"
    page = pages[-1].decode()
    assert page.lstrip().lower().startswith("<!doctype html") and "<table" in page
    assert any(str(int(w)) in page for w in windows_seen)


def test_miner_run_serves_its_metrics_and_its_page_on_a_status_port(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "BT_"))}
    env.update(HOME=str(tmp_path), COLUMNS="200", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "rollproof.cli", "miner", "run", "--model", "tiny",
                             "--state-dir", str(tmp_path / "state"), "--store", str(tmp_path / "store"),
                             "--checkpoint-root", str(tmp_path / "store"), "--metrics-port", "0", "--status-port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    urls: tuple[str, str] | None = None
    snapshots: list[dict] = []
    pages: list[bytes] = []
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            assert time.monotonic() - t0 < RUN_BOUND_S, "miner run ran past its bound"
            if urls is None:
                m = re.search(r"metrics at (http://\S+)/metrics and status page at (http://\S+/)", "".join(lines))
                urls = m.groups() if m else None
            else:
                snap = scrape(urls[0] + "/metrics")
                if snap is not None:
                    snapshots.append(snap)
                try:
                    with urllib.request.urlopen(urls[1], timeout=5) as resp:
                        pages.append(resp.read())
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    output = "".join(lines)
    assert proc.returncode == 0, output[-3000:]
    assert urls is not None and urls[0] + "/" != urls[1], output[-3000:]  # two servers, two ports
    assert any(total(s, "rollproof_build_info", role="miner") == 1 for s in snapshots), "the miner never recorded"
    assert b"starting" in pages[0] and b"starting" not in pages[-1], (pages[0][:300], pages[-1][:300])
