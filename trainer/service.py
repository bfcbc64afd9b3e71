"""The trainer's window loop: verified rows in, checkpoints out.

For each closed window a validator has scored: take the rows the validator accepted
(trainer/rows.py), drop stale ones, run one GRPO step with circuit breakers (trainer/step.py), and
journal it. Every `publish_every` applied steps, build a candidate checkpoint, evaluate it on the
held-out set against its parent (the acceptance gate: sampled held-out reward and greedy accuracy),
and, if it is not worse than the parent by more than `gate_margin` on either, upload it and announce
it on chain for window current + ACTIVATION_WINDOWS.
Withheld candidates are logged and journaled; the policy keeps training."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from adapters.chain.base import Chain
from adapters.checkpoints import publish_checkpoint
from adapters.files import atomic_write
from adapters.storage import BundleStore
from adapters.telemetry import NodeMetrics, metrics_of, set_build_info
from trainer.adapter_files import adapter_config, adapter_tensors, adapter_to_bytes, load_adapter_into
from trainer.defaults import GATE_MARGIN, HELDOUT_PROBLEMS, PUBLISH_EVERY
from trainer.checkpointing import BuiltCheckpoint, attach_files, build_checkpoint
from trainer.curriculum import CurriculumSettings, GroupOutcomes, decide
from trainer.heldout import (GreedyResult, HeldoutResult, evaluate, evaluate_greedy, gate_withholds, greedy_withholds,
                             heldout_seeds, paired_difference)
from trainer.journal import TrainerJournal
from trainer.publication import Publication  # noqa: F401  (re-exported: callers import it from here)
from trainer.metrics import TrainerMetrics, step_outcome
from trainer.optimizer_files import optimizer_tensors, optimizer_to_bytes
from trainer.policy import LoraSettings, make_policy
from trainer.record import TRAINER_SETTINGS, RecordBuilder, candidate_event, settings_json, sha256_hex, step_json
from trainer.rows import TrainingDataError, WindowRows, accepted_rows, drop_stale
from trainer.step import StepResult, TrainConfig, TrainingRow, make_optimizer, train_step
from verification.canonical import canonical_json
from verification.challenge import window_of_block
from verification.checkpoint import manifest_hash, parse_manifest
from verification.checkpoint_model import ADAPTER_FILE
from verification.constants import ACTIVATION_WINDOWS, GREEDY_GATE_MIN_DROP
from verification.environments.base import REWARD_SCALE
from verification.errors import ChainError, StorageError
from verification.generation import GenerationParams
from verification.model import LoadedModel
from verification.training_record import OPTIMIZER_FILE, START_FILE, TRAINING_FILE, WindowEvent

log = logging.getLogger("rollproof.trainer")
ROLE = "trainer"  # the role label of the trainer's NodeMetrics


@dataclass
class TrainerConfig:
    """max_staleness: rows of a checkpoint more than this many versions behind the newest announced
    one are dropped. Publishing every window, rows arrive ACTIVATION_WINDOWS + 1 versions behind, so
    the default leaves one version of slack above that.
    gate_margin: a candidate is withheld when its held-out reward is below its parent's by more than
    this (reward units, 0..1); 0.02 is about one held-out problem in 48.
    gate_greedy: the gate also measures greedy (argmax) decoding on the same held-out problems
    (trainer/greedy.py) and withholds a candidate whose greedy accuracy is below its parent's by
    more than gate_margin and by at least GREEDY_GATE_MIN_DROP problems (a single argmax flip is
    noise: docs/security.md section 6b): a sampled mean that holds while the greedy answers get
    worse is not a better model (issue 28). The cost: one greedy completion per problem and model, against
    heldout_rollouts sampled ones: about 1/4 of the sampled evaluation at 48 problems and 2
    rollouts (measured on SmolLM2, default params, one CPU thread: 11.4 s greedy against 52.9 s
    sampled, 0.22), per candidate and, per params, per parent; the base model's once per run. The greedy
    accuracies are journaled (Publication.greedy, parent_greedy) either way; with gate_greedy the
    per-problem results enter the training record and a replay re-runs them (docs/protocol.md 16)."""

    publish_every: int = PUBLISH_EVERY  # applied steps between candidates
    max_staleness: int = ACTIVATION_WINDOWS + 2
    heldout_problems: int = HELDOUT_PROBLEMS
    heldout_rollouts: int = 2
    gate_margin: float = GATE_MARGIN
    gate_greedy: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    params: GenerationParams | None = None  # generation params of the next checkpoints (default: the base's)
    # curriculum: above this held-out correct share of the parent, candidates use harder params
    # (prime-rl and grail train where the model solves 20-80%; None disables it)
    raise_difficulty_above: float | None = 0.8
    # the signal controller (trainer/curriculum.py): holds the share of groups with reward variance
    # by moving difficulty and group size; None disables it
    curriculum: CurriculumSettings | None = field(default_factory=CurriculumSettings)
    # a withheld candidate's steps are discarded: the trainer returns to the adapter and optimizer
    # state of the newest announced checkpoint. Miners only ever generate with announced checkpoints,
    # so without this a run of withheld candidates lets the trained policy drift further and further
    # from the policy that produced its rows (measured: reports/learning.md, docs/security.md 6)
    reset_on_withheld: bool = True


@dataclass
class WindowTraining:
    window: int
    rows: int
    groups: int
    signal_rate: float
    dropped_stale: int
    step: dict | None  # StepResult as a dict, None when no step ran
    note: str = ""
    mean_reward: float = 0.0  # mean reward (0..1) of the window's verified rows
    groups_solved: int = 0  # groups whose every row earned the full reward
    groups_failed: int = 0  # groups whose rows all earned the same lesser reward
    fingerprint: str = ""  # the checkpoint the window's rows were generated with


class Trainer:
    """validator: (uid, hotkey) of the validator whose reports (and ledger entries) the rows come
    from; every checkpoint's training record names it, and a replay checks each report against
    that validator's ledger entry on chain (docs/protocol.md section 16).

    registry: the process's metrics (trainer/metrics.py and the role "trainer" share of
    adapters/telemetry.py's NodeMetrics); None records into a private one. Under torchrun only rank
    0 records into it: every rank runs the same windows and steps."""

    def __init__(self, chain: Chain, keypair, base: LoadedModel, store: BundleStore, state_dir: Path,
                 config: TrainerConfig | None = None, *, validator: tuple[int, str],
                 registry: CollectorRegistry | None = None):
        self.chain = chain
        self.validator = (int(validator[0]), str(validator[1]))
        self.keypair = keypair
        self.base = base
        self.store = store
        self.config = config or TrainerConfig()
        self.params = self.config.params or base.generation
        self.journal = TrainerJournal(state_dir)
        self.policy = make_policy(base, self.config.lora)
        self.optimizer = make_optimizer(self.policy, self.config.train)
        # under torchrun (torch.distributed initialised, world > 1) the step is DDP over the ranks,
        # each given the same rows; rank 0 alone writes the journal, publishes and announces
        self.rank, self.world = _distributed_rank()
        recording = registry if self.rank == 0 else None
        self.metrics = metrics_of(TrainerMetrics, recording)
        self.node_metrics = metrics_of(NodeMetrics, recording)
        set_build_info(self.node_metrics, ROLE)
        self.ddp = None
        if self.world > 1:
            from trainer.distributed import wrap_policy

            self.ddp = wrap_policy(self.policy, self.config.train)
        self.trained_windows: set[int] = set()
        self.steps_applied = 0
        self.steps_since_publish = 0
        self.version = 0  # newest announced version (0: the base model)
        self.versions: dict[str, int] = {base.fingerprint.hex(): 0}
        self._heldout: dict[tuple[str, bytes], HeldoutResult] = {}
        self._greedy: dict[tuple[str, bytes], GreedyResult] = {}
        self._params_by_fingerprint: dict[str, GenerationParams] = {}  # of announced checkpoints
        self._newest: LoadedModel | None = None  # the newest announced checkpoint, merged (the next parent)
        self._anchor: dict | None = None  # adapter + optimizer state of the newest announced checkpoint
        self.record = RecordBuilder(self.journal.root / "data")  # the events since the anchor
        if self.world > 1:  # rank 0 restores (and reconciles the journal) first, the others read what it wrote
            import torch.distributed as dist

            if self.rank != 0:
                dist.barrier()
            self._restore()
            if self.rank == 0:
                dist.barrier()
        else:
            self._restore()
        if self._anchor is None:
            self._anchor = self._snapshot()
        self._show_journal()

    # ---- state ----------------------------------------------------------------------------------
    def _restore(self) -> None:
        state = self.journal.load_state()
        if state is not None:
            load_adapter_into(self.policy, state["adapter"], state["adapter_config"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.trained_windows = set(state["trained_windows"])
            self.steps_applied = state["steps_applied"]
            self.steps_since_publish = state["steps_since_publish"]
            self._anchor = state.get("anchor")
            self.record = RecordBuilder.from_state(self.journal.root / "data", state.get("record"))
            log.info("trainer resumed: %d steps, %d windows trained", self.steps_applied, len(self.trained_windows))
        self._reconcile()
        for pub in self.journal.publications():
            if pub["stage"] == "announced":
                self.versions[pub["fingerprint"]] = pub["version"]
                self.version = max(self.version, pub["version"])
        if self._anchor is not None and self._anchor["version"] < self.version:
            # a crash after the announcement, before the anchor moved: the journaled state is the
            # announced candidate itself (no step runs between building and announcing), and its
            # record is the announced one's: the next record starts here
            self._anchor = self._snapshot()
            self.record = RecordBuilder(self.journal.root / "data")
        if self.version and self.config.params is None:
            # the curriculum continues from the newest announced checkpoint's params
            self.params = parse_manifest(self.journal.manifest_bytes(self.version)).generation

    def _reconcile(self) -> None:
        """A crash between upload and journal: a version journaled as built is announced if the chain
        holds its fingerprint, else expired (never announced later: one checkpoint per version)."""
        pending = [p for p in self.journal.publications() if p["stage"] == "built"]
        if not pending:
            return
        on_chain = {a.fingerprint.hex() for a in self.chain.checkpoint_announcements()}
        self.steps_since_publish = 0  # the span ended with that candidate (a crash before the state write)
        for pub in pending:
            pub["stage"] = "announced" if pub["fingerprint"] in on_chain else "expired"
            self.journal.save_publication(pub["version"], pub)
            if pub["stage"] == "expired":
                self._expired_candidate(pub["version"])
            self.metrics.candidate(pub)
            log.info("checkpoint v%d was %s before the restart", pub["version"], pub["stage"])
        self._save_state()

    def _save_state(self) -> None:
        if self.rank != 0:
            return
        self.journal.save_state({
            "adapter": adapter_tensors(self.policy), "adapter_config": adapter_config(self.policy),
            "optimizer": self.optimizer.state_dict(), "trained_windows": sorted(self.trained_windows),
            "steps_applied": self.steps_applied, "steps_since_publish": self.steps_since_publish,
            "anchor": self._anchor, "record": self.record.to_state(),
        })

    def _show_journal(self, lookback: int = 16) -> None:
        """The gauges a restarted trainer had shown (counters count only what is new): the newest
        announced version, the newest candidate, the newest window (the signal and mean reward of
        the newest of the last `lookback` windows not marked "not trained", as a live trainer shows
        them: a window marked not trained leaves them as they were)."""
        if self.rank != 0:
            return
        self.node_metrics.checkpoint_version.labels(ROLE).set(self.version)
        pubs = [p for p in self.journal.publications() if p["stage"] != "built"]
        if pubs:
            self.metrics.show_candidate(pubs[-1])
        if not self.trained_windows:
            return
        self.node_metrics.window.labels(ROLE).set(max(self.trained_windows))
        for window in sorted(self.trained_windows, reverse=True)[:lookback]:
            rec = self.journal.window(window)
            if rec is not None and not rec.get("note", "").startswith("not trained"):
                self.metrics.show_window(rec["signal_rate"], rec.get("mean_reward", 0.0))
                return

    def _current_window(self) -> int:
        """The chain's current window (the block read is shown as rollproof_chain_block)."""
        block = self.chain.current_block()
        self.node_metrics.chain_block.labels(ROLE).set(block)
        return window_of_block(block)

    def _snapshot(self) -> dict:
        """The policy's adapter and the optimizer's state, copied (later steps do not touch them)."""
        return {"version": self.version, "adapter": adapter_tensors(self.policy),
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def _return_to_anchor(self) -> None:
        """Discard the steps since the newest announced checkpoint (its adapter and optimizer state)."""
        load_adapter_into(self.policy, self._anchor["adapter"], adapter_config(self.policy))
        # load_state_dict keeps same-device tensors as given: a copy, so the anchor stays as it is
        self.optimizer.load_state_dict(copy.deepcopy(self._anchor["optimizer"]))

    @property
    def parent_fingerprint(self) -> str:
        return max(self.versions, key=lambda fp: self.versions[fp])

    # ---- one window -----------------------------------------------------------------------------
    def train_window(self, window: int, report_bytes: bytes, bundle_bytes: Callable[[int], bytes | None],
                     ledger_report_hash: bytes | None = None) -> WindowTraining:
        """Train on one scored window (at most once; a repeat returns the journaled record)."""
        if window in self.trained_windows:
            return WindowTraining(**self.journal.window(window))
        self.node_metrics.window.labels(ROLE).set(window)
        if self.steps_since_publish >= self.config.publish_every:
            # a crash after the step that completed a span, before its candidate was built: build
            # it now, so every candidate follows exactly publish_every applied steps (the record's rule);
            # the window at hand is past every trained one, so from_window stays after the record's
            # windows (section 16) even where the chain's clock lags the validator's journal
            self.maybe_publish(window)
        report_sha = self._keep(report_bytes)
        read: dict[int, str] = {}

        def reading(uid: int) -> bytes | None:  # every bundle read is kept for the record
            data = bundle_bytes(uid)
            if data is not None:
                read[uid] = self._keep(data)
            return data

        try:
            rows: WindowRows = accepted_rows(report_bytes, reading, ledger_report_hash)
        except TrainingDataError as exc:
            log.error("window %d: not trained: %s", window, exc)
            return self.window_not_trained(window, str(exc), report_sha, read)
        fresh, stale = drop_stale(rows.rows, self.versions, self.version, self.config.max_staleness)
        step: StepResult | None = None
        step_seconds: float | None = None
        note = ""
        trainable = [r for r in fresh if r.advantage != 0.0]
        if not trainable:
            note = "no row with a non-zero advantage" if fresh else "no verified rows"
        else:
            batch = self.training_batch(trainable)
            started = time.perf_counter()
            if self.ddp is not None:
                from trainer.distributed import distributed_train_step

                if len(batch) < self.world:
                    note = f"{len(batch)} rows cannot be sharded over {self.world} ranks"
                else:
                    step = distributed_train_step(self.policy, self.ddp, self.optimizer, batch, self.config.train)
            else:
                step = train_step(self.policy, self.optimizer, batch, self.config.train)
            if step is not None:
                step_seconds = time.perf_counter() - started
            if step is not None and step.applied:
                self.steps_applied += 1
                self.steps_since_publish += 1
            elif step is not None:
                note = f"step skipped by the circuit breaker: {step.reason}"
                log.warning("window %d: %s (grad norm %.3g, clipped share %.2f)", window, note,
                            step.grad_norm, step.clipped_share)
        mean_reward = (sum(r.reward for r in rows.rows) / len(rows.rows) / REWARD_SCALE) if rows.rows else 0.0
        record = WindowTraining(window, len(trainable), rows.groups, rows.signal_rate, stale,
                                asdict(step) if step else None, note, mean_reward, rows.groups_solved,
                                rows.groups_failed, rows.fingerprint)
        outcome = "no_step" if step is None else "applied" if step.applied else "skipped"
        self.record.window(WindowEvent(window, report_sha, read, outcome, step.reason if step else note,
                                       tuple(r.leaf.hex() for r in trainable) if step else (), stale,
                                       step_json(step) if step else None))
        self.trained_windows.add(window)
        self._save_state()  # the update and "window trained" land in one atomic write
        if self.rank == 0:
            self.journal.save_window(window, asdict(record))
        self.metrics.window_trained(step_outcome(step), len(trainable), stale, rows.signal_rate, mean_reward,
                                    step_seconds)
        return record

    def training_batch(self, trainable: list) -> list[TrainingRow]:
        """The step's rows: the verified rows, in order, and nothing else (the record lists exactly
        these; a replay re-derives them from the report and bundles)."""
        return [TrainingRow(r.prompt, r.completion, r.logprobs, r.advantage) for r in trainable]

    def _keep(self, data: bytes) -> str:
        """Keep data the record names (SHA-256 hex). Rank 0 alone writes the journal: ranks writing
        the same file at once would race on its temporary name."""
        return self.record.keep(data) if self.rank == 0 else sha256_hex(data)

    def window_not_trained(self, window: int, why: str, report_sha: str | None = None,
                           bundles: dict[int, str] | None = None) -> WindowTraining:
        """A window whose rows cannot be tied to a verdict: marked trained with no step (never
        retried into a fallback), and recorded with the data that showed it."""
        rec = WindowTraining(window, 0, 0, 0.0, 0, None, f"not trained: {why}")
        self.node_metrics.window.labels(ROLE).set(window)
        self.record.window(WindowEvent(window, report_sha, dict(bundles or {}), "not_trained", why[:400], (), 0, None))
        self.trained_windows.add(window)
        self._save_state()
        if self.rank == 0:
            self.journal.save_window(window, asdict(rec))
        self.metrics.windows.labels("not_trained").inc()
        return rec

    # ---- checkpoints ----------------------------------------------------------------------------
    def heldout(self, lm: LoadedModel, params: GenerationParams | None = None) -> HeldoutResult:
        """Held-out reward of lm's weights under params (default: lm's own), cached."""
        params = params or lm.generation
        key = (lm.fingerprint.hex(), canonical_json(params.to_json()))
        if key not in self._heldout:
            model = lm if params == lm.generation else lm.with_generation(params)
            self._heldout[key] = evaluate(model, params, self.chain.netuid, self.config.heldout_problems,
                                          rollouts=self.config.heldout_rollouts)
        return self._heldout[key]

    def greedy(self, lm: LoadedModel, params: GenerationParams | None = None) -> GreedyResult:
        """Greedy accuracy of lm's weights on the gate's held-out problems under params (default:
        lm's own), cached like heldout()."""
        params = params or lm.generation
        key = (lm.fingerprint.hex(), canonical_json(params.to_json()))
        if key not in self._greedy:
            model = lm if params == lm.generation else lm.with_generation(params)
            self._greedy[key] = evaluate_greedy(model, params, heldout_seeds(self.chain.netuid,
                                                                             self.config.heldout_problems))
        return self._greedy[key]

    def base_greedy(self) -> GreedyResult:
        """The base model's greedy accuracy on the gate's problems under the base params: measured
        once per run (cached; the gate's own parent measure while the base is the parent under its
        params) and shown as rollproof_trainer_heldout_greedy{model="base"}."""
        result = self.greedy(self.base, self.base.generation)
        self.metrics.show_base_greedy(result.accuracy)
        return result

    def parent_model(self) -> LoadedModel:
        """The newest announced checkpoint (the base before any): kept merged in memory since its
        announcement, rebuilt from the journal only after a restart."""
        fp = self.parent_fingerprint
        if fp == self.base.fingerprint.hex():
            return self.base
        if self._newest is None or self._newest.fingerprint.hex() != fp:
            from verification.checkpoint_model import load_checkpoint

            version = self.versions[fp]
            manifest = parse_manifest(self.journal.manifest_bytes(version))
            # the journal keeps the adapter; the model needs nothing else the manifest lists (record,
            # optimizer state, start adapter), so it is checked against the adapter's entry alone
            manifest = replace(manifest, files=tuple(f for f in manifest.files if f.name == ADAPTER_FILE))
            self._newest = load_checkpoint(self.base, manifest, {ADAPTER_FILE: self._adapter_path(version).read_bytes()})
        return self._newest

    def _adapter_path(self, version: int) -> Path:
        return self.journal.root / "published" / f"{version}.{ADAPTER_FILE}"

    def _params_of(self, fingerprint: str) -> GenerationParams | None:
        """The generation params of a checkpoint this trainer knows (None: unknown)."""
        if fingerprint == self.base.fingerprint.hex():
            return self.base.generation
        if fingerprint not in self._params_by_fingerprint:  # a manifest never changes: parsed once
            version = self.versions.get(fingerprint)
            data = self.journal.manifest_bytes(version) if version else None
            if data is None:
                return None
            self._params_by_fingerprint[fingerprint] = parse_manifest(data).generation
        return self._params_by_fingerprint[fingerprint]

    def recent_outcomes(self) -> GroupOutcomes:
        """Group outcomes of the newest trained windows (at most curriculum.windows of them) whose
        rows were generated under the current params: a change is judged only on windows made after
        it reached the miners."""
        total, seen = GroupOutcomes(), 0
        for rec in sorted(self.journal.windows(), key=lambda r: -r["window"]):
            if seen >= self.config.curriculum.windows:
                break
            if not rec.get("fingerprint") or self._params_of(rec["fingerprint"]) != self.params:
                continue
            seen += 1
            signal = round(rec["signal_rate"] * rec["groups"])
            total = total + GroupOutcomes(rec["groups"], signal, rec.get("groups_solved", 0),
                                          rec.get("groups_failed", 0))
        return total

    def _maybe_raise_difficulty(self, parent: LoadedModel) -> None:
        """Curriculum: the signal controller (trainer/curriculum.py) on the recent windows' group
        outcomes; when it keeps the params, the held-out rule: when the parent solves more than
        raise_difficulty_above of the held-out problems under the current params, the next
        checkpoints use the next harder params."""
        if self.config.curriculum is not None:
            decision = decide(self.params, self.recent_outcomes(), self.config.curriculum)
            if decision.change != "none":
                log.info("curriculum: %s -> %s: %s", decision.change, decision.params.to_json(), decision.reason)
                self.params = decision.params
                return
        if self.config.raise_difficulty_above is None:
            return
        current = self.heldout(parent, self.params)
        if current.correct_share <= self.config.raise_difficulty_above:
            return
        nxt = self.params.harder()
        if nxt is not None:
            log.info("held-out correct share %.2f > %.2f: next checkpoints use harder params %s",
                     current.correct_share, self.config.raise_difficulty_above, nxt.to_json()["environments"])
            self.params = nxt

    def maybe_publish(self, current_window: int | None = None) -> Publication | None:
        """Build, gate and announce a candidate once publish_every steps were applied since the last."""
        if self.steps_since_publish < self.config.publish_every:
            return None
        if self.world > 1:
            return self._publish_on_rank0(current_window)
        return self._publish(current_window)

    def _publish_on_rank0(self, current_window) -> Publication | None:
        """Rank 0 publishes; every rank then learns the versions it knows (for the staleness rule)."""
        import torch.distributed as dist

        pub = self._publish(current_window) if self.rank == 0 else None
        self.steps_since_publish = 0
        shared = [pub, self.versions, self.version, self.params]
        dist.broadcast_object_list(shared, src=0)
        pub, self.versions, self.version, self.params = shared
        if self.rank != 0 and pub is not None:  # every rank keeps the same weights and anchor
            if pub.stage == "announced":
                self._anchor = self._snapshot()
            elif pub.stage == "withheld" and self.config.reset_on_withheld:
                self._return_to_anchor()
        return pub

    def _publish(self, current_window) -> Publication | None:
        current_window = self._current_window() if current_window is None else current_window
        version = max([self.version] + [p["version"] for p in self.journal.publications()]) + 1
        from_window = current_window + ACTIVATION_WINDOWS
        parent_fp = bytes.fromhex(self.parent_fingerprint)
        parent = self.parent_model()
        self._maybe_raise_difficulty(parent)
        built: BuiltCheckpoint = build_checkpoint(self.base, self.policy, keypair=self.keypair,
                                                  netuid=self.chain.netuid, version=version,
                                                  from_window=from_window, parent_fingerprint=parent_fp,
                                                  params=self.params)
        # parent and candidate on the same problems (the candidate's params) with the same noise
        before, after = self.heldout(parent, self.params), self.heldout(built.model)
        g_before, g_after = self.greedy(parent, self.params), self.greedy(built.model)
        self.base_greedy()
        diff = paired_difference(after, before)
        pub = Publication(version, "withheld", built.manifest.fingerprint, from_window, after.mean, before.mean,
                          after.chance, diff.mean, diff.half_width, built.size_bytes,
                          greedy=g_after.accuracy, parent_greedy=g_before.accuracy)
        self.steps_since_publish = 0
        gated = self.config.gate_greedy  # the greedy results are the gate's (and the record's) only then

        def event(stage: str):
            return candidate_event(version, stage, self.params, before.rollout_rewards, after.rollout_rewards,
                                   built.files[ADAPTER_FILE], g_before.correct if gated else (),
                                   g_after.correct if gated else ())

        failed = []  # which measures fail the gate
        if gate_withholds(before.rollout_rewards, after.rollout_rewards, self.config.heldout_rollouts,
                          self.config.gate_margin):
            failed.append(f"sampled held-out reward {after.mean:.3f} is below the parent's {before.mean:.3f} "
                          f"by more than {self.config.gate_margin}")
        if gated and greedy_withholds(g_before.correct, g_after.correct, self.config.gate_margin):
            failed.append(f"greedy held-out accuracy {g_after.accuracy:.3f} is below the parent's "
                          f"{g_before.accuracy:.3f} by more than {self.config.gate_margin} (and by at least "
                          f"{GREEDY_GATE_MIN_DROP} problems)")
        if failed:
            pub.note = "; ".join(failed)
            self.record.candidate(event("withheld"))
            if self.config.reset_on_withheld:
                self._return_to_anchor()
                self.record.return_to_anchor()
                pub.note += "; the trainer returned to the parent's weights"
            self._save_state()
            log.warning("checkpoint v%d withheld: %s", version, pub.note)
            self.journal.save_publication(version, asdict(pub))
            self.metrics.candidate(asdict(pub))
            return pub
        # the held-out evaluation takes time: a window may have begun meanwhile, and an announcement
        # must land ACTIVATION_WINDOWS before its from_window, so the window is fixed only now
        now = self._current_window() + ACTIVATION_WINDOWS
        if now > from_window:
            from_window = pub.from_window = now
        record_files, data = self._record_files(version, event("announced"), built.files[ADAPTER_FILE])
        built = attach_files(built, self.keypair, from_window, record_files)
        pub.bytes = built.size_bytes
        atomic_write(self._adapter_path(version), built.files[ADAPTER_FILE])
        atomic_write(self.journal.root / "published" / f"{version}.{TRAINING_FILE}", record_files[TRAINING_FILE])
        self.journal.save_publication(version, asdict(pub) | {"stage": "built"}, built.manifest.to_bytes())
        # the span ends with the candidate only once it is journaled as built (a crash before: the
        # restarted trainer builds it again; after: _reconcile finds it announced or expired)
        self._save_state()
        try:
            location = publish_checkpoint(self.store, built.manifest, built.files, data)
            self.chain.announce_checkpoint(self.keypair, from_window, bytes.fromhex(built.manifest.fingerprint),
                                           manifest_hash(built.manifest.to_bytes()), location)
        except (StorageError, ChainError) as exc:
            pub.stage, pub.note = "expired", f"could not publish: {exc}"
            log.error("checkpoint v%d not announced: %s", version, exc)
            self.journal.save_publication(version, asdict(pub))
            self._expired_candidate(version)
            self.metrics.candidate(asdict(pub))
            return pub
        pub.stage = "announced"
        self.journal.save_publication(version, asdict(pub))
        self.metrics.candidate(asdict(pub))
        self.node_metrics.checkpoint_version.labels(ROLE).set(version)
        self.versions[built.manifest.fingerprint] = version
        self.version = version
        self._anchor = self._snapshot()  # a crash before this line: _restore re-takes it from the state
        self.record = RecordBuilder(self.journal.root / "data")  # the next record starts here
        self._save_state()
        self._newest = built.model
        log.info("checkpoint v%d announced for window %d: held-out %.3f sampled, %.3f greedy (parent %.3f, %.3f; "
                 "chance %.3f), %d bytes", version, from_window, after.mean, g_after.accuracy, before.mean,
                 g_before.accuracy, after.chance, built.size_bytes)
        return pub

    def _record_files(self, version: int, final, adapter_file: bytes) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The checkpoint's record files (training.json, optimizer.safetensors, and for version 1
        start.safetensors) and the data the record names (sha256 hex -> bytes)."""
        anchor = self._anchor
        files: dict[str, bytes] = {}
        start_adapter = adapter_to_bytes(anchor["adapter"], adapter_config(self.policy))
        if self.version == 0:
            files[START_FILE] = start_adapter
            start_optimizer = None
            parent_manifest = None
        else:
            start_optimizer = sha256_hex(optimizer_to_bytes(optimizer_tensors(self.policy, anchor["optimizer"])))
            parent_manifest = sha256_hex(self.journal.manifest_bytes(self.version))
        files[OPTIMIZER_FILE] = optimizer_to_bytes(optimizer_tensors(self.policy, self.optimizer.state_dict()))
        lineage = sorted(((fp, v) for fp, v in self.versions.items() if v <= self.version), key=lambda x: -x[1])
        trainer_settings = {k: getattr(self.config, k) for k in TRAINER_SETTINGS}
        events = list(self.record.events) + [final]
        record = RecordBuilder(self.record.data_dir, self.record.first_window, self.record.last_window, events).record(
            netuid=self.chain.netuid, version=version, parent_fingerprint=self.parent_fingerprint,
            parent_version=self.version, parent_manifest_sha256=parent_manifest,
            start_adapter_sha256=sha256_hex(start_adapter), start_optimizer_sha256=start_optimizer,
            validator_uid=self.validator[0], validator_hotkey=self.validator[1],
            lineage=tuple(lineage[:self.config.max_staleness + 1]),
            settings=settings_json(self.config.lora, self.config.train, trainer_settings), world_size=self.world,
            end_adapter_sha256=sha256_hex(adapter_file), end_optimizer_sha256=sha256_hex(files[OPTIMIZER_FILE]))
        files[TRAINING_FILE] = record.to_bytes()
        data = {h: self.record.data(h) for h in record.data_hashes()}
        return files, data

    def _expired_candidate(self, version: int) -> None:
        """A built candidate that was never announced: the record goes on, with it as expired (the
        policy keeps its steps)."""
        from verification.training_record import parse_training_record

        path = self.journal.root / "published" / f"{version}.{TRAINING_FILE}"
        if not path.is_file():
            return
        final = parse_training_record(path.read_bytes()).events[-1]
        self.record.candidate(replace(final, stage="expired"))
        self._save_state()

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, stop, source, *, max_windows: int | None = None, poll_s: float = 5.0,
            on_window: Callable[[WindowTraining, Publication | None], None] | None = None) -> list[WindowTraining]:
        """Train on every scored window of `source` (trainer/sources.py) not trained yet, oldest
        first, publishing as configured; then wait for more. A window whose rows cannot be tied to
        a verdict is logged and marked trained with no step (it is never retried into a fallback)."""
        done: list[WindowTraining] = []
        while not stop.is_set():
            pending = [w for w in source.scored_windows() if w not in self.trained_windows]
            for window in pending:
                try:
                    data = source.window(window)
                except TrainingDataError as exc:
                    log.error("window %d: not trained: %s", window, exc)
                    rec = self.window_not_trained(window, str(exc))
                else:
                    rec = self.train_window(window, *data)
                pub = self.maybe_publish()
                done.append(rec)
                if on_window:
                    on_window(rec, pub)
                if (max_windows is not None and len(done) >= max_windows) or stop.is_set():
                    return done
            if stop.wait(poll_s):
                break
        return done


def _distributed_rank() -> tuple[int, int]:
    import os

    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from trainer.distributed import init_from_env

        init_from_env()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
