"""The validator's Prometheus metrics (docs/operating.md, "Metrics"). Per-miner series carry the
miner's uid; nothing else is per miner."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.telemetry import DURATION_BUCKETS

WEIGHT_RESULTS = ("set", "rate_limited", "all_zero", "failed")
CHAIN_WRITES = ("ledger", "weights")


class ValidatorMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.window_stages = Counter("rollproof_validator_window_stages",
                                     "windows entering a journal stage (validator/stages.py: scored, ledgered, "
                                     "weights_intent, counted, deferred, dropped, checkpoint_failed)",
                                     ["stage"], registry=r)
        self.catch_up_skipped = Counter("rollproof_validator_catch_up_skipped_windows",
                                        "windows skipped to catch up with the chain", registry=r)
        self.window_lag = Gauge("rollproof_validator_window_lag",
                                "windows between the chain's newest finished window and the last one scored",
                                registry=r)
        self.window_seconds = Histogram("rollproof_validator_window_seconds",
                                        "time to score one window (fetch and verify)", buckets=DURATION_BUCKETS,
                                        registry=r)
        self.miners = Gauge("rollproof_validator_miners", "miners that committed in the last scored window",
                            registry=r)
        self.fetch_seconds = Histogram("rollproof_validator_fetch_seconds", "time to fetch one miner's bundle",
                                       buckets=DURATION_BUCKETS, registry=r)
        self.fetch_results = Counter("rollproof_validator_fetch_results",
                                     "bundle fetches by result: ok, bad_commitment, fetch_failed, hash_mismatch",
                                     ["uid", "result"], registry=r)
        self.verification_seconds = Histogram("rollproof_validator_verification_seconds",
                                              "time to verify one window's fetched bundles", buckets=DURATION_BUCKETS,
                                              registry=r)
        self.rollouts_checked = Counter("rollproof_validator_rollouts_checked", "rollouts recomputed and checked",
                                        registry=r)
        self.rollout_verdicts = Counter("rollproof_validator_rollout_verdicts",
                                        "checked rollouts by verdict: ok or the reason code (docs/protocol.md)",
                                        ["reason"], registry=r)
        self.miner_verdicts = Counter("rollproof_validator_miner_verdicts",
                                      "miners' window outcomes: ok or the first failure's reason code",
                                      ["uid", "reason"], registry=r)
        self.miner_score = Gauge("rollproof_validator_miner_score", "a miner's score in the last scored window (0..1)",
                                 ["uid"], registry=r)
        self.miner_weight = Gauge("rollproof_validator_miner_weight",
                                  "a miner's share of the last weight set that landed (0..1)", ["uid"], registry=r)
        self.weight_sets = Counter("rollproof_validator_weight_sets",
                                   "weight-set attempts by result: set, rate_limited, all_zero, failed",
                                   ["result"], registry=r)
        self.chain_write_retries = Counter("rollproof_validator_chain_write_retries",
                                           "chain writes retried after a failure (ledger entry, weights)",
                                           ["write"], registry=r)
