"""The validator's window pipeline:

  opening beacon -> commitments -> per miner: commitment format, fetch (size limit, timeout),
  bundle hash, then the Verifier (schema, rows root, signature, window/hotkey/block, beacon, model,
  problems, sketches, sampling, logprobs, termination, rewards, advantages) on the groups the opening
  randomness picks (every group's problem is checked) -> scores and copycat labels -> u16 weights -> score ledger + weights.

Verification outcomes are journaled per miner as they finish (validator/state.py).

Outages: `run` never exits because the chain, a store or the drand relays are down, however long
(capped exponential backoff, one log line when a dependency goes down and one when it is back:
adapters/outage.py). Scoring and chain writes are separate steps: a window whose ledger entry or
weights the chain refuses stays at its journal stage and is retried with backoff while later
windows are still verified and scored; a newer window's weights supersede an older window's
pending ones (the older window is deferred and its scores are folded into the newer set, as for the
rate limit). Weight sets are write-ahead: the set's windows, uids and weights are journaled before
the transaction and the windows journaled counted once the chain shows it, so every deferred window
is counted in exactly one set (or dropped past MAX_COMBINED_WINDOWS, logged) whatever the restart
timing (validator/stages.py has the state machine). It stops only on
ChainRefusedError (not registered, no permit, an EVM key that does not own the uid: `preflight`
checks them before any work).

Metrics (validator/metrics.py, and the role's share of adapters/telemetry.py's NodeMetrics): every
line the validator logs on a state change moves one. Journal stages are counted where they are
written (validator/state.py); fetch results and miner verdicts when an outcome is first computed
(a resumed window's journaled outcomes are not counted again); weight-set attempts by result and
chain-write retries where the writes are sent; outages through Outages."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry

from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import Chain, CommitmentRecord
from adapters.fetch import Fetcher, FetchTooLargeError
from adapters.windows import opening_randomness
from adapters.files import atomic_write
from adapters.outage import Backoff, Outages
from adapters.telemetry import NodeMetrics, metrics_of, set_build_info
from validator.metrics import ValidatorMetrics
from validator.stages import Stage
from validator.state import ValidatorState, WeightsIntent
from verification.bundle import Bundle, bundle_hash, completion_digest, decode_bundle, row_digest
from verification.bundle_size import bundle_limit
from verification.canonical import canonical_json
from verification.challenge import (
    groups_to_check,
    opening_round,
    opening_seed,
    window_deadline_block,
    window_of_block,
    window_start_block,
)
from verification.commitment import decode_commitment
from verification.constants import ACTIVATION_WINDOWS, PROTOCOL_VERSION
from verification.errors import (
    BeaconUnavailableError,
    BundleFormatError,
    BundleTooLargeError,
    ChainError,
    ChainRefusedError,
    CheckpointError,
    CommitmentFormatError,
    StorageError,
    WeightsUnavailableError,
)
from verification.model import LoadedModel, default_batch_rows
from verification.scoring import MinerOutcome, MinerScore, combine_windows, score_window, verified_root
from verification.verifier import BundleCheck, BundleVerdict, Expectation, Verifier, format_verdict
from validator.defaults import (BEACON_GRACE_S, DEFAULT_KEEP_BUNDLES, FETCH_WORKERS, MAX_CATCH_UP_WINDOWS,  # noqa: F401
                                 MAX_COMBINED_WINDOWS, VERIFY_MINERS, WINDOW_FETCH_BUDGET_S, fetch_deadline_s)

log = logging.getLogger("rollproof.validator")
ROLE = "validator"  # the role label of the shared NodeMetrics

# validator-level reasons (before the Verifier runs), in check order
VALIDATOR_REASONS = ("bad_commitment", "fetch_failed", "hash_mismatch")


@dataclass
class _Fetched:
    """A miner's bundle that passed the validator-level checks, with the groups its opening picks."""

    bundle: Bundle
    groups: list[int]
    audit: dict


@dataclass
class WindowResult:
    window: int
    report: dict
    report_hash: bytes
    scores: list[MinerScore]
    wrote_ledger: bool
    wrote_weights: bool
    checkpoint_error: str = ""  # set when the window was skipped: its checkpoint could not be verified


class Validator:
    def __init__(self, chain: Chain, keypair, lm: LoadedModel, beacons: BeaconSource, fetcher: Fetcher,
                 state_dir, *, beacon_cache: BeaconCache | None = None, batch_size: int | None = None,
                 networks=None, resolver=None,
                 keep_bundles: int | None = DEFAULT_KEEP_BUNDLES, max_catch_up: int = MAX_CATCH_UP_WINDOWS,
                 fetch_workers: int = FETCH_WORKERS, fetch_budget_s: float = WINDOW_FETCH_BUDGET_S,
                 backoff: Backoff | None = None, verify_miners: int = VERIFY_MINERS,
                 max_batch_bytes: int | None = None, max_combined: int = MAX_COMBINED_WINDOWS,
                 registry: CollectorRegistry | None = None):
        """`resolver` (adapters.checkpoints.ModelResolver) picks and verifies the checkpoint in force
        for each window from chain data; without one every window uses `lm`. `backoff`: the retry
        delays of `run` during outages. `batch_size` caps the rollouts of one recompute forward,
        taken from any checked groups of the `verify_miners` miners verified together (None:
        verification.model.default_batch_rows: 16 on a CPU, on an accelerator only
        `max_batch_bytes`, the forward's memory bound). `max_combined`: windows one weight set
        combines at most (its own and the skipped run right before it). `registry`: the process's
        Prometheus registry the validator records into (None: a private one)."""
        self.metrics = metrics_of(ValidatorMetrics, registry)
        self.node_metrics = metrics_of(NodeMetrics, registry)
        set_build_info(self.node_metrics, ROLE)
        self.chain = chain
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.lm = lm
        self.beacons = beacons
        self.fetcher = fetcher
        self.state = ValidatorState(state_dir, self.metrics)
        self.beacon_cache = beacon_cache
        self.networks = list(networks or [beacons.info])
        self.batch_size = batch_size
        self.resolver = resolver
        self._verifiers: dict[bytes, Verifier] = {}
        self.keep_bundles = keep_bundles  # None keeps every bundle
        self.max_catch_up = max(1, max_catch_up)
        if max_combined < 1:
            raise ValueError("max_combined must be at least 1")
        self.max_combined = max_combined
        self.fetch_workers = fetch_workers
        self.fetch_budget_s = fetch_budget_s
        if verify_miners < 1:
            raise ValueError("verify_miners must be at least 1")
        self.verify_miners = verify_miners
        self.max_batch_bytes = max_batch_bytes
        self.outages = Outages(log, backoff, metrics=self.node_metrics, role=ROLE)
        self._write_retry_at = 0.0  # monotonic time before which refused chain writes are not retried
        self._catch_up_warned: tuple[int, int] | None = None
        self._skipped_through = -1  # the newest window counted in catch_up_skipped
        self._write_failed = {write: False for write in ("ledger", "weights")}  # its last attempt failed
        self._score_uids: set[str] = set()  # uid labels of miner_score (the last scored window's miners)
        self._weight_uids: set[str] = set()  # uid labels of miner_weight (the last set that landed)

    def model_for(self, window: int) -> LoadedModel:
        """The checkpoint in force for window (CheckpointError when it cannot be verified)."""
        return self.lm if self.resolver is None else self.resolver.model_for(window)

    def verifier_for(self, lm: LoadedModel) -> Verifier:
        v = self._verifiers.get(lm.fingerprint)
        if v is None:
            if len(self._verifiers) >= 4:
                self._verifiers.clear()
            rows = self.batch_size if self.batch_size is not None else default_batch_rows(lm.device)
            v = self._verifiers[lm.fingerprint] = Verifier(lm, self.networks, batch_size=rows,
                                                           max_batch_bytes=self.max_batch_bytes)
        return v

    # ---- miners ---------------------------------------------------------------------------------
    def verify_commitments(self, window: int, records: list[CommitmentRecord], expected: list[Expectation],
                           open_seed: bytes, progress: list[Callable[[int], None] | None] | None = None,
                           verifier: Verifier | None = None,
                           fetched: dict[int, bytes | StorageError] | None = None) -> list[tuple[MinerOutcome, dict]]:
        """These miners' outcomes, in order, with one batched recompute over all their checked
        groups (Verifier.verify_many). `fetched`: bundle bytes (or StorageError) by uid, for the
        miners whose bundles the caller already fetched; the others are fetched here, one by one."""
        verifier = verifier or self.verifier_for(self.lm)
        progress = progress or [None] * len(records)
        fetched = fetched or {}
        results: list[tuple[MinerOutcome, dict] | None] = []
        to_verify: list[tuple[int, CommitmentRecord, dict]] = []  # (slot in results, record, audit)
        checks: list[BundleCheck] = []
        for rec, exp, prog in zip(records, expected, progress):
            ready = self._before_verifier(window, rec, open_seed, fetched.get(rec.uid), verifier.lm.generation)
            if isinstance(ready, tuple):  # failed before the Verifier: (outcome, audit)
                results.append(ready)
                continue
            to_verify.append((len(results), rec, ready.audit))
            checks.append(BundleCheck(ready.bundle, exp, ready.groups, prog))
            results.append(None)
        verdicts = verifier.verify_many(checks) if checks else []
        for (slot, rec, audit), check, verdict in zip(to_verify, checks, verdicts):
            results[slot] = self._outcome(rec, check.bundle, verdict, audit)
            checked = [v for v in verdict.rollouts if v.reason != "not_checked"]
            self.metrics.rollouts_checked.inc(len(checked))
            for v in checked:
                self.metrics.rollout_verdicts.labels(v.reason).inc()
        return results

    def _before_verifier(self, window: int, rec: CommitmentRecord, open_seed: bytes,
                         fetched: bytes | StorageError | None, generation=None):
        """The validator-level checks of one miner: its commitment, fetch, bundle hash and format.
        (outcome, audit) when one fails, else the bundle to verify (_Fetched). `generation`: the
        window's generation params, whose bundle bound caps the fetch and the parse (a bigger file
        is bundle_too_large, never parsed). Only a bundle that parsed is kept on disk. Each miner's
        fetch result is counted (fetch_results: bad_commitment, fetch_failed (also a file over the
        bound), hash_mismatch, ok); a fetch made here is timed (fetch_seconds)."""
        def fail(reason: str, detail: str, audit: dict | None = None, fetch_result: str | None = None):
            if fetch_result is not None:
                self.metrics.fetch_results.labels(str(rec.uid), fetch_result).inc()
            return MinerOutcome(rec.uid, rec.hotkey, False, reason, detail, rec.block), audit or {}

        try:
            c = decode_commitment(rec.data)
        except CommitmentFormatError as exc:
            return fail("bad_commitment", str(exc), fetch_result="bad_commitment")
        audit = {"bundle_hash": c.bundle_hash.hex(), "location": c.location, "checked_groups": [], "rollouts": []}
        if c.window != window:
            return fail("bad_commitment", f"commitment names window {c.window}, landed in window {window}", audit,
                        fetch_result="bad_commitment")
        bound = bundle_limit(generation) if generation is not None else None
        try:
            if isinstance(fetched, StorageError):
                raise fetched
            if fetched is not None:
                data = fetched
            else:
                started = time.monotonic()
                try:
                    data = self.fetcher.fetch(c.location, bound,
                                              fetch_deadline_s(bound) if bound is not None else None)
                finally:
                    self.metrics.fetch_seconds.observe(time.monotonic() - started)
        except FetchTooLargeError as exc:
            return fail(BundleTooLargeError.code, str(exc), audit, fetch_result="fetch_failed")
        except StorageError as exc:
            return fail("fetch_failed", str(exc), audit, fetch_result="fetch_failed")
        if bundle_hash(data) != c.bundle_hash:
            return fail("hash_mismatch", "the fetched file is not the committed bundle", audit,
                        fetch_result="hash_mismatch")
        self.metrics.fetch_results.labels(str(rec.uid), "ok").inc()
        try:
            bundle = decode_bundle(data, generation=generation)
        except BundleFormatError as exc:
            return fail(format_verdict(exc).reason, str(exc), audit)
        # kept for audit only once it parsed: junk a miner committed costs no disk for 48 windows
        atomic_write(self.state.bundle_path(window, rec.uid), data)
        # the signed root: if it is not the rows' real root, the Verifier rejects every row anyway
        groups = groups_to_check(open_seed, rec.hotkey, bytes.fromhex(bundle.header.rows_root),
                                 bundle.header.n_groups)
        audit["checked_groups"] = groups
        return _Fetched(bundle, groups, audit)

    @staticmethod
    def _outcome(rec: CommitmentRecord, bundle: Bundle, verdict: BundleVerdict, audit: dict) -> tuple[MinerOutcome, dict]:
        audit["rollouts"] = [{"group": v.group, "rollout": v.rollout, "reason": v.reason, "detail": v.detail}
                             for v in verdict.rollouts if v.reason != "not_checked"]
        by_row = {(v.group, v.rollout): v for v in verdict.rollouts}
        digests = [completion_digest(g.prompt, r) for g, r in bundle.rows()]
        verified = [row_digest(g.index, g.environment, g.prompt, r) for g, r in bundle.rows()
                    if by_row[(g.index, r.index)].ok]
        foreign = [d for (g, r), d in zip(bundle.rows(), digests) if by_row[(g.index, r.index)].reason == "bad_problem"]
        return MinerOutcome(rec.uid, rec.hotkey, verdict.ok, verdict.reason, verdict.detail, rec.block,
                            digests, verified if verdict.ok else [], foreign), audit

    # ---- one window -----------------------------------------------------------------------------
    def preflight(self) -> int:
        """Before any work: the chain will take this validator's ledger entries and weights
        (registered; on EVM chains also a validator permit and an EVM key that owns the uid).
        Returns the uid; ChainRefusedError says what to fix."""
        return self.chain.preflight(self.keypair, validator=True)

    def uid(self) -> int:
        uid = self.chain.uid_of(self.hotkey)
        if uid is None:
            raise ChainRefusedError(f"validator hotkey {self.hotkey} is not registered on netuid {self.chain.netuid}")
        return uid

    def ready(self, window: int) -> bool:
        """True once the window's opening beacon exists (after its deadline plus the buffer); False
        while that round is not due yet. Raises BeaconUnavailableError when the round is overdue
        (BEACON_GRACE_S past its time on the beacon source's clock) and no relay serves it."""
        if self.chain.current_block() < window_deadline_block(window):
            return False
        try:
            opening_randomness(self.chain, self.beacons, window, self.beacon_cache)
        except BeaconUnavailableError:
            if self._opening_overdue(window):
                raise
            return False
        return True

    def _opening_overdue(self, window: int) -> bool:
        info = self.beacons.info
        deadline = self.chain.block(window_deadline_block(window))
        due = info.time_of_round(opening_round(info, deadline.timestamp))
        clock = getattr(self.beacons, "clock", time.time)  # a local signer's clock; relays keep wall time
        return clock() >= due + BEACON_GRACE_S

    def process_window(self, window: int, *, on_miner: Callable[[MinerOutcome], None] | None = None,
                       progress_factory: Callable[[int, int], Callable[[int], None] | None] | None = None) -> WindowResult:
        """Score window and write its ledger entry and weights. Raises BeaconUnavailableError while the
        opening round is not out, ChainError when the chain cannot be read or written."""
        self.uid()
        skipped = self.score_window(window, on_miner=on_miner, progress_factory=progress_factory)
        return skipped if skipped is not None else self.write_window(window)

    def score_window(self, window: int, *, on_miner: Callable[[MinerOutcome], None] | None = None,
                     progress_factory: Callable[[int, int], Callable[[int], None] | None] | None = None
                     ) -> WindowResult | None:
        """Verify and score window into the journal (stage scored; a no-op when it already is).
        Returns None once scored, or the finished result of a window whose checkpoint cannot be
        verified (journaled checkpoint_failed: nothing is scored or written)."""
        self.node_metrics.window.labels(ROLE).set(window)
        stage = self.state.stage(window)
        if stage == Stage.CHECKPOINT_FAILED:
            detail = self.state.checkpoint_error(window)
            return WindowResult(window, {}, b"", [], False, False, checkpoint_error=detail)
        if stage is None:
            try:
                lm = self.model_for(window)
            except CheckpointError as exc:
                log.error("window %d skipped: its checkpoint cannot be verified: %s", window, exc)
                self.state.save_checkpoint_error(window, str(exc))
                return WindowResult(window, {}, b"", [], False, False, checkpoint_error=str(exc))
            self.node_metrics.checkpoint_version.labels(ROLE).set(lm.meta.get("checkpoint_version", 0))
            started = time.monotonic()
            report = self._score(window, lm, on_miner, progress_factory)
            self.state.save_report(window, canonical_json(report))
            self.state.set_stage(window, Stage.SCORED)
            self.metrics.window_seconds.observe(time.monotonic() - started)
        return None

    def write_window(self, window: int, *, superseded_by: int | None = None) -> WindowResult:
        """The chain writes of a scored window: its ledger entry, then its weights (or, with
        `superseded_by`, a newer scored window whose set will count its scores: this window is
        deferred). Each step reads the chain first and is journaled after, so a retry never writes
        twice; a weight set is journaled as an intent before it is sent (_write_weights). Raises
        ChainError when the chain cannot be read or refuses a write (the stage stays)."""
        my_uid = self.uid()
        stage = self.state.stage(window)
        if stage == Stage.CHECKPOINT_FAILED:
            return WindowResult(window, {}, b"", [], False, False, checkpoint_error=self.state.checkpoint_error(window))
        if stage is None:
            raise ValueError(f"window {window} is not scored")
        report_bytes = self.state.report_path(window).read_bytes()
        report = json.loads(report_bytes)
        report_hash = hashlib.sha256(report_bytes).digest()
        uids = [m["uid"] for m in report["miners"]]
        weights = [m["weight"] for m in report["miners"]]
        wrote_ledger = wrote_weights = False
        if stage == Stage.SCORED:
            if self.chain.ledger_entry(my_uid, window) is None:
                self._chain_write("ledger", lambda: self.chain.record_scores(
                    self.keypair, window, uids, weights, bytes.fromhex(report["verified_root"]), report_hash))
                wrote_ledger = True
            self.state.set_stage(window, Stage.LEDGERED)
            stage = Stage.LEDGERED
        if stage in (Stage.LEDGERED, Stage.WEIGHTS_INTENT):
            wrote_weights = self._write_weights(window, stage, report, my_uid, superseded_by)
        scores = [MinerScore(m["uid"], m["hotkey"], m["reason"], m["detail"], m["credited_rollouts"],
                             m["score"], m["weight"], m["verdict"]) for m in report["miners"]]
        return WindowResult(window, report, report_hash, scores, wrote_ledger, wrote_weights)

    def _write_weights(self, window: int, stage: Stage, report: dict, my_uid: int, superseded_by: int | None) -> bool:
        """Window's weights, from stage ledgered or weights_intent; True when a set was sent now.

        The chain is read first: a set this journal's intent describes that already landed (sent
        before a crash) is journaled counted and never sent again. Otherwise a window superseded by
        a newer scored one, or closed while the chain's weight rate limit holds, is deferred (a later
        set counts it). Else the set (this window's scores and every deferred window's before it, at
        most max_combined windows: _plan) is journaled as an intent, sent, and its windows journaled
        counted in this window."""
        done = self.chain.weights_window(my_uid)
        intent = self.state.intent(window) if stage == Stage.WEIGHTS_INTENT else None
        if intent is not None and self._landed(intent, done, my_uid):
            log.info("window %d: its weight set (windows %s) is on chain; journaled counted", window,
                     _window_list(intent.windows))
            self._count(intent, landed=True)
            return False
        if stage == Stage.LEDGERED and done is not None and done >= window:
            # a set landed with no intent journaled: only a journal written before intents existed
            if done == window:
                intent = self._plan(window, report)
                log.info("window %d: its weight set (windows %s) is on chain; journaled counted", window,
                         _window_list(intent.windows))
                self._count(intent, landed=True)
            else:
                log.warning("window %d dropped: window %d's weight set landed without its scores", window, done)
                self.state.set_stage(window, Stage.DROPPED)
            return False
        if superseded_by is not None:
            log.info("window %d: no weight set for it landed before window %d was scored; its scores count in "
                     "the next weight set", window, superseded_by)
            self.state.set_stage(window, Stage.DEFERRED)
            return False
        if not self.chain.weights_ready(my_uid):
            self.metrics.weight_sets.labels("rate_limited").inc()
            log.info("window %d: the chain's weight rate limit has not passed; its scores count in the "
                     "next weight set", window)
            self.state.set_stage(window, Stage.DEFERRED)
            return False
        if intent is None:
            self._count_late_set(window, my_uid)
            intent = self._plan(window, report)
            self.state.save_intent(intent)
        sent = False
        if any(intent.weights):
            try:
                self._chain_write("weights", lambda: self.chain.set_weights(
                    self.keypair, window, list(intent.uids), list(intent.weights)))
            except WeightsUnavailableError as exc:  # nothing was sent, and a retry cannot help
                self.metrics.weight_sets.labels("failed").inc()
                log.warning("window %d: no weights set: %s; its scores count in the next set that lands",
                            window, exc)
                self.state.clear_intent(window)  # never taken for a set that landed
                self.state.set_stage(window, Stage.DEFERRED)
                return False
            except ChainError:  # refused or unreachable: the stage stays and the loop retries it
                self.metrics.weight_sets.labels("failed").inc()
                raise
            self.metrics.weight_sets.labels("set").inc()
            sent = True
        else:
            self.metrics.weight_sets.labels("all_zero").inc()
            log.warning("window %d: every miner scored zero in windows %s; weights left unchanged", window,
                        _window_list(intent.windows))
        self._count(intent, landed=sent)
        return sent

    def _landed(self, intent: WeightsIntent, done: int | None, my_uid: int) -> bool:
        """Whether the chain shows the intent's set: its weights window reached the intent's window
        or, on chains that do not keep one (Bittensor), the weights on chain are the intent's
        (within the SDK's u16 rounding)."""
        if done is not None:
            return done >= intent.window
        want = {u: w for u, w in zip(intent.uids, intent.weights) if w > 0}
        have = {u: w for u, w in self.chain.weights(my_uid).items() if w > 0}
        return bool(want) and have.keys() == want.keys() and all(abs(have[u] - w) <= 1 for u, w in want.items())

    def _count_late_set(self, window: int, my_uid: int) -> None:
        """A set whose window was deferred (a newer window was scored before the chain showed it)
        but that landed afterwards (its transaction was still pending through a crash): its windows
        are journaled counted in it before window's set is planned, so none is counted twice. On
        chains that name the last set's window that is the one to look at; elsewhere the newest
        deferred window with an intent (the chain takes sets in window order only)."""
        deferred = self.state.deferred_before(window)
        done = self.chain.weights_window(my_uid)  # read again: it may have landed since the last read
        if done is not None:
            late = [done] if done in deferred else []
        else:
            late = [w for w in deferred if self.state.intent(w) is not None][-1:]
        for w in late:
            intent = self.state.intent(w)
            if intent is not None and self._landed(intent, done, my_uid):
                log.info("window %d: its weight set (windows %s) landed after it was deferred; journaled counted",
                         w, _window_list(intent.windows))
                self._count(intent, landed=True)

    def _count(self, intent: WeightsIntent, *, landed: bool = False) -> None:
        """Journal every window of a set the chain shows (or an all-zero one, never sent) as counted
        in its window, the set's own window last (a crash between them repeats this). landed: the
        chain holds the set, whose shares become miner_weight."""
        total = sum(intent.weights)
        if landed and total:
            self._weight_uids = _set_per_uid(self.metrics.miner_weight, self._weight_uids,
                                             {u: w / total for u, w in zip(intent.uids, intent.weights)})
        for w in intent.windows:
            self.state.mark_counted(w, intent.window)

    def _chain_write(self, write: str, send: Callable[[], object]) -> None:
        """Send one chain write ("ledger" or "weights"); one sent after the last write of its kind
        failed is a retry (chain_write_retries)."""
        if self._write_failed[write]:
            self.metrics.chain_write_retries.labels(write).inc()
        try:
            send()
        except ChainError:
            self._write_failed[write] = True
            raise
        self._write_failed[write] = False

    def _plan(self, window: int, report: dict) -> WeightsIntent:
        """The weight set for window: its own scores and those of every deferred window before it
        that no set counted yet (gaps and checkpoint_failed windows between them included), the
        newest max_combined - 1 of them; older deferred windows are dropped, one log line each. One
        window: its report's weights; several: verification.scoring.combine_windows."""
        deferred = self.state.deferred_before(window)
        keep = deferred[max(0, len(deferred) - (self.max_combined - 1)):]
        for w in deferred[:len(deferred) - len(keep)]:
            log.warning("window %d dropped: more than %d deferred windows before window %d's weight set "
                        "(MAX_COMBINED_WINDOWS = %d); its scores count in no set", w, self.max_combined - 1,
                        window, self.max_combined)
            self.state.set_stage(w, Stage.DROPPED)
        if not keep:
            return WeightsIntent(window, (window,), tuple(m["uid"] for m in report["miners"]),
                                 tuple(m["weight"] for m in report["miners"]))
        reports = [json.loads(self.state.report_path(w).read_bytes()) for w in keep] + [report]
        registered = {n.uid: n.hotkey for n in self.chain.neurons()}
        rows = [[(m["uid"], m["hotkey"], float(m["score"])) for m in r["miners"]] for r in reports]
        uids, weights = combine_windows(rows, registered)
        log.info("window %d: weights over windows %s", window, _window_list(keep + [window]))
        return WeightsIntent(window, tuple(keep) + (window,), tuple(uids), tuple(weights))

    def _fetch_pending(self, window: int, records: list[CommitmentRecord], open_seed: bytes,
                       generation) -> dict[int, bytes | StorageError]:
        """The bundles of these miners not verified yet, fetched concurrently (fetch_workers at a
        time) in an order no miner chooses (fetch_order: a permutation seeded by the window's
        opening randomness), each within its window's bundle bound and its deadline sized from it
        (fetch_deadline_s), all within fetch_budget_s: a slow or stalling miner holds one slot for
        at most one deadline, and stallers cannot push the others past the budget. Records whose
        commitment does not parse are left out (they fail bad_commitment unfetched)."""
        wanted: dict[int, str] = {}
        for rec in fetch_order(records, open_seed):
            if self.state.outcome(window, rec.uid) is not None:
                continue
            try:
                wanted[rec.uid] = decode_commitment(rec.data).location
            except CommitmentFormatError:
                continue
        if not wanted:
            return {}
        bound = bundle_limit(generation)
        results = self.fetcher.fetch_many(list(wanted.values()), max_workers=self.fetch_workers, max_bytes=bound,
                                          timeout=fetch_deadline_s(bound), budget_s=self.fetch_budget_s,
                                          on_fetched=self.metrics.fetch_seconds.observe)
        return dict(zip(wanted, results))

    def _score(self, window, lm: LoadedModel, on_miner, progress_factory) -> dict:
        open_round, open_beacon = opening_randomness(self.chain, self.beacons, window, self.beacon_cache)
        start = self.chain.block(window_start_block(window))
        expected_base = dict(netuid=self.chain.netuid, window=window, block_hash=start.hash,
                             block_time=start.timestamp, fingerprint=lm.fingerprint)
        verifier = self.verifier_for(lm)
        seed = opening_seed(self.chain.netuid, window, open_beacon.randomness)
        outcomes: list[MinerOutcome] = []
        audits: dict[int, dict] = {}
        records = [r for r in sorted(self.chain.commitments(window), key=lambda r: r.uid) if r.hotkey != self.hotkey]
        # every bundle of the window fetched up front (I/O bound, many at once, one budget); each is
        # at most the window's bundle bound, so memory stays bounded; then verified block by block
        self.metrics.miners.set(len(records))
        fetched_all = self._fetch_pending(window, records, seed, lm.generation)
        verifying, verifying_any = 0.0, False  # time spent verifying the bundles not verified before a restart
        for n in range(0, len(records), self.verify_miners):
            # a block of miners: their checked rollouts recomputed together
            block = records[n:n + self.verify_miners]
            saved = {rec.uid: self.state.outcome(window, rec.uid) for rec in block}
            pending = [rec for rec in block if saved[rec.uid] is None]
            if pending:
                fetched = {rec.uid: fetched_all.pop(rec.uid) for rec in pending if rec.uid in fetched_all}
                progress = [progress_factory(rec.uid, len(records)) if progress_factory else None for rec in pending]
                expected = [Expectation(hotkey=rec.hotkey, **expected_base) for rec in pending]
                started = time.monotonic()
                results = self.verify_commitments(window, pending, expected, seed, progress, verifier, fetched)
                verifying, verifying_any = verifying + time.monotonic() - started, True
                for rec, result in zip(pending, results):
                    self.state.save_outcome(window, *result)
                    self.metrics.miner_verdicts.labels(str(rec.uid), result[0].reason).inc()
                    saved[rec.uid] = result
            for rec in block:
                outcome, audit = saved[rec.uid]
                outcomes.append(outcome)
                audits[outcome.uid] = audit
                if on_miner:
                    on_miner(outcome)
        if verifying_any:
            self.metrics.verification_seconds.observe(verifying)
        scores = score_window(outcomes)
        # miner_score is 0..1: the window's score over its best (as its u16 weights are max-scaled)
        top = max((s.score for s in scores), default=0)
        self._score_uids = _set_per_uid(self.metrics.miner_score, self._score_uids,
                                        {s.uid: s.score / top if top else 0.0 for s in scores})
        blocks = {o.uid: o.commit_block for o in outcomes}
        return {
            "protocol": f"rollproof/{PROTOCOL_VERSION}",
            "netuid": self.chain.netuid,
            "window": window,
            "validator": self.hotkey,
            "model_fingerprint": lm.fingerprint.hex(),
            "block_hash": start.hash.hex(),
            "block_time": start.timestamp,
            "opening_round": open_round,
            "opening_chain": open_beacon.chain_hash.hex(),
            "verified_root": verified_root(outcomes).hex(),
            "miners": [asdict(s) | {"commit_block": blocks[s.uid], **audits.get(s.uid, {})} for s in scores],
        }

    # ---- the loop -------------------------------------------------------------------------------
    def next_window(self, head: int | None = None) -> int:
        """The next window to score: the one after the newest scored window in the journal (the
        last closed one when the journal is empty), never more than max_catch_up closed windows
        back (after a long outage). `head`: the current block, when the caller just read it."""
        head = self.chain.current_block() if head is None else head
        self.node_metrics.chain_block.labels(ROLE).set(head)
        last_closed = window_of_block(head) - 1
        newest = self.state.newest_window()
        if newest is None:
            return last_closed
        self.metrics.window_lag.set(max(0, last_closed - newest))
        nxt = min(newest + 1, last_closed + 1)
        oldest = last_closed - self.max_catch_up + 1
        if nxt < oldest:
            first = max(nxt, self._skipped_through + 1)  # a window skipped at an earlier poll counts once
            if first < oldest:
                self.metrics.catch_up_skipped.inc(oldest - first)
                self._skipped_through = oldest - 1
            if self._catch_up_warned != (newest, oldest):  # once, not at every poll
                self._catch_up_warned = (newest, oldest)
                log.warning("journal ends at window %d, %d windows behind: skipping windows %d..%d (their bundles "
                            "may be gone and their weights are stale); resuming at %d", newest,
                            last_closed - newest, nxt, oldest - 1, oldest)
            return oldest
        return nxt

    def run(self, stop: threading.Event, *, max_windows: int | None = None,
            on_result: Callable[[WindowResult], None] | None = None, poll_s: float = 2.0,
            preflight: bool = True, **kw) -> list[WindowResult]:
        """Score every window as it closes and write its results, until `stop` (or `max_windows`
        windows finished). Transient ChainError, StorageError and BeaconUnavailableError are retried
        with backoff for as long as they last; ChainRefusedError is raised. preflight=False: the
        caller already ran the startup check (the CLI does, before the model loads)."""
        results: list[WindowResult] = []
        checked = not preflight  # preflight passed
        while not stop.is_set():
            scored = False
            finished: list[WindowResult] = []
            failure = None
            try:
                if not checked:
                    uid = self.preflight()
                    log.info("validator %s holds uid %d on netuid %d", self.hotkey, uid, self.chain.netuid)
                    checked = True
                head = self.chain.current_block()
                window = self.next_window(head)
                self.node_metrics.window.labels(ROLE).set(max(window, 0))
                if window >= 0 and self.ready(window):
                    skipped = self.score_window(window, **kw)
                    self.outages.beacon.ok()
                    scored = True
                    if skipped is not None:
                        finished.append(skipped)
                self._write_pending(finished)
                self.outages.chain.ok()
            except ChainRefusedError:
                raise
            except (BeaconUnavailableError, ChainError, StorageError) as exc:
                failure = exc
            if scored and self.resolver is not None:  # replay an announced checkpoint before its first window
                self.resolver.prepare(window + ACTIVATION_WINDOWS)
            for result in finished:
                results.append(result)
                if self.keep_bundles is not None:
                    self.state.prune_bundles(result.window + 1 - self.keep_bundles)
                if on_result:
                    on_result(result)
                if max_windows is not None and len(results) >= max_windows:
                    return results
            if failure is not None:
                if stop.wait(self.outages.for_error(failure).failed(failure)):
                    break
                continue
            if scored:
                continue  # the next closed window may be ready already
            target = max(head + 1, window_deadline_block(max(window, 0)))
            retry_in = self._write_retry_at - time.monotonic()
            if self.state.unwritten_windows():
                # refused writes are retried after their backoff, and at least a block later
                if retry_in > 0 and stop.wait(min(retry_in, self.outages.backoff.max_s)):
                    break
                target = head + 1
            if not self.outages.wait_for_block(self.chain, target, stop, poll_s):
                break
        return results

    def _write_pending(self, finished: list[WindowResult]) -> None:
        """Write every scored window's ledger entry and weights, oldest first, unless a refused write
        is still in its backoff; only the newest sets weights (older ones are superseded). Stops at
        the first refusal, which stays journaled at its stage for the next retry. Appends the
        windows finished now to `finished`. Raises ChainError when the chain does not answer."""
        pending = self.state.unwritten_windows()
        if not pending or time.monotonic() < self._write_retry_at:
            return
        for w in pending:
            try:
                finished.append(self.write_window(w, superseded_by=pending[-1] if w != pending[-1] else None))
            except ChainRefusedError:
                raise
            except ChainError as exc:
                if not _answers(self.chain):
                    raise  # unreachable, not refusing: the chain's outage, retried by the loop
                self._write_retry_at = time.monotonic() + self.outages.writes.failed(exc)
                log.debug("window %d: chain writes pending at stage %s: %s", w, self.state.stage(w), exc)
                return
        # healthy only once every pending write went through: a superseded window's ledger entry
        # landing while the newest window's weights are still refused is not a recovery
        self.outages.writes.ok()
        self._write_retry_at = 0.0


def _set_per_uid(gauge, held: set[str], values: dict[int, float]) -> set[str]:
    """Set a per-miner gauge to exactly these uids' values; the series of `held` uids not among
    them are removed (a miner absent from the window has no score in it). Returns the uid labels
    the gauge holds now."""
    labels = {str(u): v for u, v in values.items()}
    for uid in held - labels.keys():
        gauge.remove(uid)
    for uid, v in labels.items():
        gauge.labels(uid).set(v)
    return set(labels)


def _window_list(windows) -> str:
    return ", ".join(map(str, windows))


def fetch_order(records: list[CommitmentRecord], open_seed: bytes) -> list[CommitmentRecord]:
    """The window's records in the order their bundles are fetched: by SHA-256(opening seed || uid),
    a permutation fixed by the window's opening randomness, which no miner knows when it commits
    (not uid order, which a miner picks by registering early or late)."""
    return sorted(records, key=lambda r: hashlib.sha256(open_seed + r.uid.to_bytes(8, "big")).digest())


def _answers(chain: Chain) -> bool:
    """Whether the chain answers a read (a failed write while it does is a refusal, not an outage)."""
    try:
        chain.current_block()
    except ChainError:
        return False
    return True
