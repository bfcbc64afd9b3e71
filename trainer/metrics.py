"""The trainer's Prometheus metrics (docs/operating.md, "Metrics")."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.telemetry import DURATION_BUCKETS

# a step's outcome: applied, no_step (too few rows), or the circuit breaker that tripped
# (trainer/step.py: non_finite, clipped_share, grad_norm; several tripped: the first)
STEP_OUTCOMES = ("applied", "no_step", "non_finite", "clipped_share", "grad_norm")
CHECKPOINT_STAGES = ("announced", "withheld", "expired")


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.windows = Counter("rollproof_trainer_windows",
                               "windows by outcome: trained (a step ran or was skipped), not_trained (its report or "
                               "bundles could not be read)", ["outcome"], registry=r)
        self.steps = Counter("rollproof_trainer_steps", "optimizer steps by outcome: applied, no_step, or the breaker",
                             ["outcome"], registry=r)
        self.step_seconds = Histogram("rollproof_trainer_step_seconds", "time of one optimizer step",
                                      buckets=DURATION_BUCKETS, registry=r)
        self.rows_trained = Counter("rollproof_trainer_rows_trained", "verified rows in applied steps", registry=r)
        self.rows_dropped_stale = Counter("rollproof_trainer_rows_dropped_stale",
                                          "verified rows dropped as too many versions behind", registry=r)
        self.signal_rate = Gauge("rollproof_trainer_signal_rate",
                                 "share of the last window's groups with reward variance (learning signal)", registry=r)
        self.mean_reward = Gauge("rollproof_trainer_mean_reward", "mean reward of the last window's verified rows",
                                 registry=r)
        self.checkpoints = Counter("rollproof_trainer_checkpoints", "candidates by stage: announced, withheld, expired",
                                   ["stage"], registry=r)
        self.checkpoint_version = Gauge("rollproof_trainer_checkpoint_version", "version of the newest candidate",
                                        registry=r)
        self.heldout_reward = Gauge("rollproof_trainer_heldout_reward",
                                    "held-out reward of the newest candidate, its parent, and chance",
                                    ["model"], registry=r)
        self.checkpoint_bytes = Gauge("rollproof_trainer_checkpoint_bytes", "bytes of the newest candidate's files",
                                      registry=r)
