"""The miner's Prometheus metrics (docs/operating.md, "Metrics"). Labelled by the miner's uid:
`localnet` runs several miners in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.telemetry import DURATION_BUCKETS

WINDOW_OUTCOMES = ("committed", "missed", "skipped")


class MinerMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.windows = Counter("rollproof_miner_windows", "windows by outcome: committed, missed, skipped",
                               ["uid", "outcome"], registry=r)
        self.generation_seconds = Histogram("rollproof_miner_generation_seconds",
                                            "time to generate and prove one window's bundle",
                                            ["uid"], buckets=DURATION_BUCKETS, registry=r)
        self.generation_window_fraction = Gauge("rollproof_miner_generation_window_fraction",
                                                "blocks the last generation took over the window's blocks "
                                                "(above about 0.8 commitments start to miss)", ["uid"], registry=r)
        self.tokens = Counter("rollproof_miner_tokens", "completion tokens generated", ["uid"], registry=r)
        self.tokens_per_second = Gauge("rollproof_miner_tokens_per_second",
                                       "completion tokens per second of the last generation", ["uid"], registry=r)
        self.decode_seconds = Counter("rollproof_miner_decode_seconds",
                                      "time spent decoding (forward passes and sampling, proof work included)",
                                      ["uid"], registry=r)
        self.proof_seconds = Counter("rollproof_miner_proof_seconds",
                                     "time spent on the proof inside decoding (hidden-state commitments, sampling proof)",
                                     ["uid"], registry=r)
        self.proof_share = Gauge("rollproof_miner_proof_share", "proof time over decode time of the last generation",
                                 ["uid"], registry=r)
        self.commit_latency_seconds = Histogram("rollproof_miner_commit_latency_seconds",
                                                "from sending the commitment to the chain holding it",
                                                ["uid"], buckets=DURATION_BUCKETS, registry=r)
        self.store_writes = Counter("rollproof_miner_store_writes", "bundle uploads by result: ok, failed",
                                    ["uid", "result"], registry=r)
        self.bundle_bytes = Gauge("rollproof_miner_bundle_bytes", "size of the last bundle built", ["uid"], registry=r)
        # added for issue 27's rule that every state-change log line moves a metric: the "resuming
        # with the bundle built before the restart" line
        self.resumed_windows = Counter("rollproof_miner_resumed_windows",
                                       "windows resumed with the bundle built before a restart", ["uid"], registry=r)
        self.validator_score = Gauge("rollproof_miner_validator_score",
                                     "this miner's share of the scores in a validator's newest ledger entry (0..1)",
                                     ["uid", "validator_uid"], registry=r)
        self.validator_scored_window = Gauge("rollproof_miner_validator_scored_window",
                                             "the window of that ledger entry", ["uid", "validator_uid"], registry=r)
        self.validator_weight = Gauge("rollproof_miner_validator_weight",
                                      "this miner's share of a validator's weights on chain (0..1)",
                                      ["uid", "validator_uid"], registry=r)
