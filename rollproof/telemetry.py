"""A node's telemetry as the CLI starts it: the process's one Prometheus registry, the metrics server
and the status page (adapters/telemetry_http.py), started before the node does any work so that a
port or address it cannot use is one line and exit 2 (rollproof/cli_common.start_telemetry).

The status page is known only once the node knows its journal (the chain's identity names it), so
the server serves a `PageSlot`: a "starting" page until the command sets the role's page."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from adapters.telemetry import build_labels
from adapters.telemetry_http import TelemetryServer
from rollproof.status_page import localnet_page as status_localnet_page
from rollproof.status_page import page_for

Page = Callable[[], bytes]
Replays = Callable[[], Mapping[str, str]]
REFRESH_S = 10


def _html(title: str, body: str) -> bytes:
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">'
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
            ).encode()


def starting_page(role: str) -> Page:
    """The page until the node knows its journal (it waits for the chain, then loads the model)."""
    data = _html(f"rollproof {role}", "<p>starting: waiting for the chain and the model</p>")
    return lambda: data


def role_page(role: str, state_dir: Path, replays: Replays | None = None) -> Page:
    """The status page of a role whose journal is `state_dir` (rollproof/status_page.py). replays:
    the node's replay verdicts (replay_verdicts), which no journal holds."""
    return page_for(role, Path(state_dir), replays=replays)


def localnet_page(workdir: Path, replays: Replays | None = None) -> Page:
    """The status page of `rollproof localnet` (workdir layout: rollproof/localnet.py)."""
    return status_localnet_page(Path(workdir), replays=replays)


def replay_verdicts(replayer, resolver) -> dict[str, str]:
    """fingerprint hex -> what this process's replay (trainer/replay_node.CheckpointReplayer) and
    resolver (adapters/checkpoints.ModelResolver) said of each checkpoint they judged. Safe to call
    from a page worker while the node judges: both are read through copies."""
    out = {}
    for report in list(replayer.reports.values()):
        out[report.fingerprint] = (f"replayed: {report.steps} steps, adapter within {report.adapter_error:.2g} "
                                   f"of the update, {report.seconds:.0f} s")
    for (verdict_key, _), why in resolver.invalid_verdicts().items():
        out[verdict_key[1].hex() if isinstance(verdict_key[1], bytes) else str(verdict_key[1])] = f"void: {why}"
    return out


class PageSlot:
    """The page a server serves, settable once the node knows it (thread-safe: a worker may be
    rendering while the command sets it)."""

    def __init__(self, page: Page):
        self._page = page
        self._lock = threading.Lock()

    def set(self, page: Page) -> None:
        with self._lock:
            self._page = page

    def __call__(self) -> bytes:
        with self._lock:
            page = self._page
        return page()


@dataclass
class Telemetry:
    """The process's registry and the servers it runs (none without --metrics-port/--status-port)."""

    registry: CollectorRegistry
    page: PageSlot
    servers: list[TelemetryServer] = field(default_factory=list)

    def where(self) -> str | None:
        """The start line: where the metrics and the page are served; None when nothing is."""
        metrics = next((s for s in self.servers if s.registry is not None), None)
        pages = next((s for s in self.servers if s.page is not None), None)
        if metrics is None and pages is None:
            return None
        parts = []
        if metrics is not None:
            parts.append(f"metrics at {metrics.url}metrics")
        if pages is not None:
            parts.append(f"status page at {pages.url}")
        info = build_labels()
        return f"{' and '.join(parts)} (rollproof {info['version']}, protocol {info['protocol']})"

    def close(self) -> None:
        for server in self.servers:
            server.close()


def start_telemetry(role: str, host: str, metrics_port: int | None, status_port: int | None) -> Telemetry:
    """The registry, and the servers the ports ask for: metrics (and the page at / unless
    `status_port`) on `metrics_port`, the page alone on `status_port`. Raises TelemetryBindError
    (its `.part`, `.host` and `.port` name what is at fault); a server already bound is closed again."""
    registry = CollectorRegistry(auto_describe=True)
    telemetry = Telemetry(registry, PageSlot(starting_page(role)))
    wanted = []
    if metrics_port is not None:
        wanted.append((metrics_port, registry, telemetry.page if status_port is None else None, f"{role}-metrics"))
    if status_port is not None:
        wanted.append((status_port, None, telemetry.page, f"{role}-status"))
    try:
        for port, reg, page, name in wanted:
            telemetry.servers.append(TelemetryServer(host, port, registry=reg, page=page, name=name))
    except BaseException:
        telemetry.close()
        raise
    return telemetry
