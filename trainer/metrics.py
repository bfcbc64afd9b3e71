"""The trainer's Prometheus metrics (docs/operating.md, "Metrics").

trainer/service.py records into them as it goes, each thing once: a window when it is marked
trained (the journal's trained windows decide what is new, so a restart re-counts nothing), a
candidate when its stage is final (announced, withheld, or expired, the last also when a restart
finds a built candidate the chain never got). Counters start at zero in each process (Prometheus'
rate() and increase() treat a restart as a counter reset); gauges are state, so a restarted trainer
sets them again from its journal (the newest window's signal and reward, the newest candidate).
Under torchrun only rank 0 records (the ranks run the same windows and steps; the others would
count each of them again)."""

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
        self.heldout_greedy = Gauge("rollproof_trainer_heldout_greedy",
                                    "greedy (argmax) accuracy on the gate's held-out problems of the newest candidate, "
                                    "its parent, and the base model", ["model"], registry=r)
        self.checkpoint_bytes = Gauge("rollproof_trainer_checkpoint_bytes", "bytes of the newest candidate's files",
                                      registry=r)

    # ---- recording (trainer/service.py) -----------------------------------------------------------
    def window_trained(self, outcome: str, rows: int, dropped_stale: int, signal_rate: float, mean_reward: float,
                       step_seconds: float | None) -> None:
        """A window marked trained: its step's outcome (step_outcome), the rows an applied step
        trained on, the stale rows it dropped, its signal and mean reward; step_seconds when a step ran."""
        self.windows.labels("trained").inc()
        self.steps.labels(outcome).inc()
        if step_seconds is not None:
            self.step_seconds.observe(step_seconds)
        if outcome == "applied":
            self.rows_trained.inc(rows)
        self.rows_dropped_stale.inc(dropped_stale)
        self.show_window(signal_rate, mean_reward)

    def show_window(self, signal_rate: float, mean_reward: float) -> None:
        self.signal_rate.set(signal_rate)
        self.mean_reward.set(mean_reward)

    def candidate(self, pub: dict) -> None:
        """A candidate reached its final stage (announced, withheld, expired): counted, and shown
        as the newest."""
        self.checkpoints.labels(pub["stage"]).inc()
        self.show_candidate(pub)

    def show_candidate(self, pub: dict) -> None:
        """The newest candidate's version, held-out rewards and bytes (a journaled publication; a
        field it lacks leaves its gauge as it is)."""
        self.checkpoint_version.set(pub["version"])
        for model, key in (("candidate", "heldout"), ("parent", "parent_heldout"), ("chance", "chance")):
            if pub.get(key) is not None:
                self.heldout_reward.labels(model).set(pub[key])
        for model, key in (("candidate", "greedy"), ("parent", "parent_greedy")):
            if pub.get(key) is not None:
                self.heldout_greedy.labels(model).set(pub[key])
        if pub.get("bytes") is not None:
            self.checkpoint_bytes.set(pub["bytes"])


    def show_base_greedy(self, accuracy: float) -> None:
        """The base model's greedy accuracy on the gate's problems under the base params (once per run)."""
        self.heldout_greedy.labels("base").set(accuracy)


def step_outcome(step) -> str:
    """A step's STEP_OUTCOMES label: no_step (None: no step ran), applied, or the first breaker
    that tripped (StepResult.reason lists them ';'-joined, in trainer/step.py's order)."""
    if step is None:
        return "no_step"
    return "applied" if step.applied else step.reason.split(";")[0]
