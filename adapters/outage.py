"""Outages of the services a node depends on (the chain, the bundle store, the drand relays): a
node never exits because one is down, it waits with capped exponential backoff and says so once.

`Dependency` tracks one service as "healthy" or "unhealthy since t": the first failure logs one
line ("chain unreachable: <the error>; retrying"), later failures only count and lengthen the
delay, and the first success after them logs one line ("chain reachable again after 42 s"). So an
outage of any length costs two log lines, not one per poll. Each also moves the node's
`rollproof_dependency_*` metrics (adapters/telemetry.py), so an alert can fire on what the log says."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.telemetry import NodeMetrics, metrics_of
from verification.errors import BeaconUnavailableError, ChainError, ChainRefusedError, StorageError


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (n = 1, 2, ...): initial_s doubling, capped at max_s."""

    initial_s: float = 1.0
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** max(0, failures - 1))


class Dependency:
    """One outside service as the node's loop last saw it."""

    def __init__(self, name: str, log: logging.Logger, backoff: Backoff | None = None, *,
                 down: str = "unreachable", up: str = "reachable again",
                 clock: Callable[[], float] = time.monotonic, metrics: NodeMetrics | None = None,
                 role: str = "", label: str | None = None):
        """metrics, role, label: the NodeMetrics series this dependency moves (label: its
        `dependency` label, default the name); without metrics it records into a private registry."""
        self.name = name
        self.metrics = metrics_of(NodeMetrics, None) if metrics is None else metrics
        self.labels = (role, label or name)
        self.metrics.dependency_up.labels(*self.labels).set(1)
        self.log = log
        self.backoff = backoff or Backoff()
        self.down_text, self.up_text = down, up
        self.clock = clock
        self.failures = 0  # consecutive failures of the current outage
        self.total_failures = 0
        self.outages = 0  # how many times it went down
        self.since: float | None = None  # when the current outage began (None: healthy)
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return self.since is None

    def failed(self, exc: BaseException | str) -> float:
        """Record a failure; returns the delay before the next attempt."""
        with self._lock:
            self.failures += 1
            self.total_failures += 1
            self.metrics.dependency_failures.labels(*self.labels).inc()
            if self.since is None:
                self.since = self.clock()
                self.outages += 1
                self.metrics.dependency_outages.labels(*self.labels).inc()
                self.metrics.dependency_up.labels(*self.labels).set(0)
                self.log.warning("%s %s: %s; retrying", self.name, self.down_text, exc)
            return self.backoff.delay(self.failures)

    def ok(self) -> None:
        """Record a success (logs once if the service was down)."""
        with self._lock:
            if self.since is not None:
                took = self.clock() - self.since
                self.metrics.dependency_outage_seconds.labels(*self.labels).inc(max(0.0, took))
                self.metrics.dependency_up.labels(*self.labels).set(1)
                self.log.warning("%s %s after %s s (%d failed attempts)", self.name, self.up_text,
                                 f"{took:.1f}" if took < 10 else f"{took:.0f}", self.failures)
            self.since = None
            self.failures = 0


class Outages:
    """A node's dependencies: `chain` (reads), `writes` (transactions the chain answers but refuses),
    `store` and `beacon`; `for_error` picks the one a typed error belongs to."""

    def __init__(self, log: logging.Logger, backoff: Backoff | None = None, *,
                 metrics: NodeMetrics | None = None, role: str = ""):
        """metrics, role: the node's NodeMetrics and its role label (dependency labels: chain,
        chain_writes, store, beacon)."""
        self.backoff = backoff or Backoff()
        kw = {"metrics": metrics if metrics is not None else metrics_of(NodeMetrics, None), "role": role}
        self.chain = Dependency("chain", log, self.backoff, **kw)
        self.writes = Dependency("chain", log, self.backoff, down="refuses writes", up="accepts writes again",
                                 label="chain_writes", **kw)
        self.store = Dependency("store", log, self.backoff, **kw)
        self.beacon = Dependency("beacon relay", log, self.backoff, label="beacon", **kw)

    def for_error(self, exc: BaseException) -> Dependency:
        if isinstance(exc, StorageError):
            return self.store
        if isinstance(exc, BeaconUnavailableError):
            return self.beacon
        if isinstance(exc, ChainError):
            return self.chain
        raise TypeError(f"not an outage error: {type(exc).__name__}")

    def wait_for_block(self, chain, number: int, stop: threading.Event, poll_s: float) -> bool:
        """Wait until the chain reaches block `number`; through an outage of its RPC, back off and
        return so the caller's loop re-reads where it is. False once `stop` is set (the loop ends).
        A permanent refusal (ChainRefusedError) propagates."""
        try:
            return chain.wait_for_block(number, stop, poll_s) is not None
        except ChainRefusedError:
            raise
        except ChainError as exc:
            return not stop.wait(self.chain.failed(exc))
