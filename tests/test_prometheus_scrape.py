"""A real Prometheus (Debian's `prometheus`, scripts/install_telemetry.sh) scrapes a real node,
`rollproof localnet --model tiny --metrics-port P`, every second: the target comes up, values read
back through Prometheus's HTTP API move as windows pass, every Grafana panel expression of
docs/grafana/rollproof.json and every variable's selector evaluates without a PromQL error, and the
example alert rules of docs/operating.md load and evaluate cleanly. Marker telemetry (README: the
telemetry test command, which .ci/run runs)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from dashboard_env import (
    REPO, alert_rules_doc, load_dashboard, panel_queries, substitute, variable_selectors, yaml_blocks,
)

pytestmark = pytest.mark.telemetry

# every counter moves between windows, and the checkpoint the trainer announces after the first
# window is in force from the fourth: replayed and judged, so the checkpoint panels have data too
WINDOWS = 4
NODE_BOUND_S = 900  # wall-clock bounds (a hang fails the test; nothing is timed)
UP_BOUND_S = 120
# the panel queries a healthy local network leaves empty: nothing failed or restarted (panel title,
# refId); every other query of the dashboard must return data
EMPTY_WHEN_HEALTHY = {
    ("Dependency failures and outages begun (per hour)", "A"),
    ("Dependency failures and outages begun (per hour)", "B"),
    ("Outage time (seconds per hour)", "A"),
    ("Miner windows by outcome (per hour)", "B"),  # resumed after a restart
    ("Chain write retries (per hour) and outage time", "A"),
    ("Chain write retries (per hour) and outage time", "B"),
}
# and the ones that wait for the trainer's first candidate (after its first applied step: a tiny
# network's rewards are often all zero, so whether one comes in a short run is chance) ...
EMPTY_BEFORE_A_CANDIDATE = {
    ("Held-out reward per checkpoint: sampled and greedy", "A"),
    ("Held-out reward per checkpoint: sampled and greedy", "B"),
    ("Checkpoints: candidates by stage (per hour) and size", "A"),
}
# ... or for a checkpoint in force (judged by the miners and the validator)
EMPTY_BEFORE_A_CHECKPOINT_IN_FORCE = {("Checkpoints judged by verdict (per hour)", "A")}


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        msg = f"{program} is not installed; install it with: bash scripts/install_telemetry.sh"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{msg} (CI is set: the telemetry tests must run, not skip)", pytrace=False)
        pytest.skip(msg)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusAPI:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params) -> dict:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a PromQL error, with Prometheus's JSON body
            return json.loads(e.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str, at: float) -> dict:
        return self.get("/api/v1/query", query=expr, time=f"{at:.3f}")

    def values(self, expr: str, start: float, end: float) -> list[float]:
        """The one series `expr` gives, sampled every second from start to end."""
        return [v for _, v in _range(self, expr, start, end)]


def _range(api: PrometheusAPI, expr: str, start: float, end: float) -> list[tuple[float, float]]:
    """(time, value) of the one series `expr` gives, every second from start to end."""
    r = api.get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
    assert r["status"] == "success", (expr, r)
    series = r["data"]["result"]
    assert len(series) == 1, f"{expr}: {len(series)} series"
    return [(float(t), float(v)) for t, v in series[0]["values"]]


def _scalar(api: PrometheusAPI, expr: str, at: float) -> float:
    r = api.query(expr, at)
    assert r["status"] == "success" and len(r["data"]["result"]) == 1, (expr, r)
    return float(r["data"]["result"][0]["value"][1])


def _prometheus_config(tmp: Path, metrics_port: int) -> Path:
    """docs/operating.md's scrape config, pointed at the node and scraped every second, and its
    example alert rules."""
    (scrape,) = [b for b in yaml_blocks() if isinstance(b, dict) and "scrape_configs" in b]
    (job,) = scrape["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp / "rules.yml").write_text(yaml.safe_dump(alert_rules_doc()))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp / "rules.yml")], "scrape_configs": [job]}
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(NODE_BOUND_S + 300)
def test_prometheus_scrapes_localnet_and_evaluates_the_dashboard(tmp_path):
    prometheus = _need("prometheus")
    metrics_port, prom_port = _free_port(), _free_port()
    config = _prometheus_config(tmp_path, metrics_port)
    prom_log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                            stdout=prom_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    node_log_path = tmp_path / "localnet.log"
    node = None
    try:
        api = PrometheusAPI(prom_port)
        deadline = time.monotonic() + 60
        while not api.ready():
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.5)

        env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="160")
        with open(node_log_path, "w") as node_log:
            node = subprocess.Popen([sys.executable, "-m", "rollproof.cli", "localnet", "--model", "tiny",
                                     "--windows", str(WINDOWS), "--metrics-port", str(metrics_port),
                                     "--workdir", str(tmp_path / "net")],
                                    cwd=REPO, env=env, stdout=node_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

        def node_output() -> str:
            return node_log_path.read_text()[-4000:]

        # the target comes up: the node serves /metrics before it loads the model
        deadline = time.monotonic() + UP_BOUND_S
        while True:
            targets = api.get("/api/v1/targets")["data"]["activeTargets"]  # [] until discovery ran
            assert [t["labels"]["job"] for t in targets] in ([], ["rollproof"]), targets
            if targets and targets[0]["health"] == "up":
                break
            assert node.poll() is None, f"the node exited with {node.returncode}:\n{node_output()}"
            assert time.monotonic() < deadline, f"target never up: {targets}\n{node_output()}"
            time.sleep(0.5)
        t_first = time.time()

        try:
            node.wait(timeout=NODE_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"localnet did not finish in {NODE_BOUND_S} s:\n{node_output()}")
        assert node.returncode == 0, f"localnet exited with {node.returncode}:\n{node_output()}"
        # the last moment Prometheus saw the node up, once the scrape that found it gone is stored
        # (a scrape's samples carry its start time but land when it ends)
        time.sleep(3)
        t_alive = max(t for t, v in _range(api, 'up{job="rollproof"}', t_first, time.time()) if v == 1)
        assert t_alive > t_first

        # values read back through Prometheus move as windows pass
        for expr in ('max(rollproof_window{role="miner"})', 'max(rollproof_window{role="validator"})',
                     'max(rollproof_window{role="trainer"})',
                     'sum(rollproof_miner_windows_total{outcome="committed"})',
                     "sum(rollproof_miner_generation_seconds_count)",
                     "sum(rollproof_validator_rollouts_checked_total)",
                     "sum(rollproof_validator_miner_verdicts_total)",
                     "sum(rollproof_trainer_windows_total)"):
            seen = api.values(expr, t_first, t_alive)
            assert seen[-1] > seen[0], f"{expr} did not move while the node ran: {seen[0]} .. {seen[-1]}"
            assert seen == sorted(seen), f"{expr} went backwards: {seen}"
        # localnet's cheaters fail verification: their reasons come through as labels
        reasons = api.query('sum by (reason) (rollproof_validator_miner_verdicts_total)', t_alive)["data"]["result"]
        assert {"ok"} < {r["metric"]["reason"] for r in reasons}, reasons

        # every panel's expression (and every variable's selector) evaluates: no PromQL error, and
        # data wherever a healthy network has some
        dashboard = load_dashboard()
        queries = panel_queries(dashboard) + variable_selectors(dashboard)
        may_be_empty = set(EMPTY_WHEN_HEALTHY)
        if _scalar(api, "rollproof_trainer_checkpoint_version", t_alive) == 0:
            may_be_empty |= EMPTY_BEFORE_A_CANDIDATE
        if _scalar(api, 'max(rollproof_checkpoint_version{role!="trainer"})', t_alive) == 0:
            may_be_empty |= EMPTY_BEFORE_A_CHECKPOINT_IN_FORCE
        assert EMPTY_WHEN_HEALTHY | EMPTY_BEFORE_A_CANDIDATE | EMPTY_BEFORE_A_CHECKPOINT_IN_FORCE <= \
            {(q.panel, q.ref) for q in queries}, "a panel named here is not on the dashboard"
        failed, empty = [], []
        for q in queries:
            r = api.query(substitute(q.expr), t_alive)
            if r["status"] != "success":
                failed.append(f"{q.panel} ({q.ref}): {r.get('errorType')}: {r.get('error')}")
            elif not r["data"]["result"] and (q.panel, q.ref) not in may_be_empty:
                empty.append(f"{q.panel} ({q.ref}): {q.expr}")
        assert not failed, "\n".join(failed)
        assert not empty, "queries without data:\n" + "\n".join(empty)

        # the documented alert rules loaded and evaluate (health ok once evaluated)
        names = {r["alert"] for g in alert_rules_doc()["groups"] for r in g["rules"]}
        deadline = time.monotonic() + 30
        while True:
            rules = [r for g in api.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            if all(r["health"] != "unknown" for r in rules) and {r["name"] for r in rules} == names:
                break
            assert time.monotonic() < deadline, rules
            time.sleep(0.5)
        assert [r for r in rules if r["health"] != "ok"] == []
    finally:
        if node is not None:
            _stop(node)
        _stop(prom)
        prom_log.close()
