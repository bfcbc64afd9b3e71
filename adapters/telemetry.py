"""Prometheus metrics every role shares (docs/operating.md lists them all).

A node's metrics live in one `prometheus_client.CollectorRegistry` per process. `localnet` runs
every role in one process, so the shared metrics carry a `role` label ("miner", "validator",
"trainer") and each role's own metrics (miner/metrics.py, validator/metrics.py, trainer/metrics.py)
carry `uid` where several nodes of the role can share a process. `metrics_of(cls, registry)` gives
the one instance of a metrics class per registry (prometheus_client refuses a name registered
twice); a role built without a registry records into a private one, so its code never asks whether
metrics are on.

Naming: `rollproof_` prefix, counters end `_total` (prometheus_client adds it), durations are
`_seconds` histograms, no label beyond role, uid, validator_uid and small fixed sets (reason,
outcome, dependency)."""

from __future__ import annotations

import threading
import weakref
from importlib import metadata
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from verification.constants import PROTOCOL_VERSION

# no `_created` series beside every counter and histogram: dashboards do not use them and they
# double the exposition
disable_created_metrics()

ROLES = ("miner", "validator", "trainer")
DEPENDENCIES = ("chain", "chain_writes", "store", "beacon")
# a window is WINDOW_BLOCKS blocks of 12 s (240 s on finney); local networks are faster
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 240, 480, 960)
CHECKPOINT_VERDICTS = ("valid", "invalid", "unavailable")

T = TypeVar("T")
_instances: "weakref.WeakKeyDictionary[CollectorRegistry, dict[type, object]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def metrics_of(cls: type[T], registry: CollectorRegistry | None) -> T:
    """The one instance of metrics class `cls` on `registry` (built on first use); None: a fresh
    private registry, for a role whose operator did not ask for metrics."""
    if registry is None:
        return cls(CollectorRegistry(auto_describe=True))
    with _lock:
        per = _instances.setdefault(registry, {})
        if cls not in per:
            per[cls] = cls(registry)
        return per[cls]


class NodeMetrics:
    """What every role reports: where it is, its dependencies' health, the checkpoint in force and
    the checkpoints it judged (docs/protocol.md sections 15-16)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        r = registry
        self.build = Info("rollproof_build", "rollproof release and protocol version of a running role",
                          ["role"], registry=r)
        self.window = Gauge("rollproof_window", "the window the role is working on", ["role"], registry=r)
        self.chain_block = Gauge("rollproof_chain_block", "the chain's newest block as the role last read it",
                                 ["role"], registry=r)
        self.dependency_up = Gauge("rollproof_dependency_up",
                                   "1 while the dependency answers, 0 during an outage (dependency: chain, "
                                   "chain_writes, store, beacon)", ["role", "dependency"], registry=r)
        self.dependency_failures = Counter("rollproof_dependency_failures",
                                           "failed attempts to reach a dependency (each is retried with backoff)",
                                           ["role", "dependency"], registry=r)
        self.dependency_outages = Counter("rollproof_dependency_outages", "outages begun (the 'unreachable' log line)",
                                          ["role", "dependency"], registry=r)
        self.dependency_outage_seconds = Counter("rollproof_dependency_outage_seconds",
                                                 "time spent in finished outages",
                                                 ["role", "dependency"], registry=r)
        self.checkpoint_version = Gauge("rollproof_checkpoint_version",
                                        "version of the checkpoint in force for the role's current window (0: the base model)",
                                        ["role"], registry=r)
        self.checkpoints_judged = Counter("rollproof_checkpoints_judged",
                                          "announced checkpoints judged: valid (verified and replayed), invalid (void on "
                                          "every node), unavailable (cannot be fetched yet: the window is skipped)",
                                          ["role", "verdict"], registry=r)
        self.checkpoint_replay_seconds = Histogram("rollproof_checkpoint_replay_seconds",
                                                   "time to replay one checkpoint from its training record",
                                                   ["role"], buckets=DURATION_BUCKETS, registry=r)


def build_labels() -> dict[str, str]:
    """rollproof_build_info's labels: the installed release and the protocol version."""
    try:
        release = metadata.version("rollproof")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown"
    return {"version": release, "protocol": str(PROTOCOL_VERSION)}


def set_build_info(metrics: NodeMetrics, role: str) -> None:
    """rollproof_build_info{role, version, protocol} = 1 for a role starting in this process."""
    metrics.build.labels(role).info(build_labels())
