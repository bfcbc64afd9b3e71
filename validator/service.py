"""The validator's window pipeline:

  opening beacon -> commitments -> per miner: commitment format, fetch (size limit, timeout),
  bundle hash, then the Verifier (schema, rows root, signature, window/hotkey/block, beacon, model,
  problems, sketches, sampling, logprobs, termination, rewards, advantages) on the groups the opening
  randomness picks -> copycat de-duplication -> scores -> u16 weights -> score ledger + weights.

Verification outcomes are journaled per miner as they finish (validator/state.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import Chain, CommitmentRecord
from adapters.storage import Fetcher
from adapters.windows import opening_randomness
from adapters.files import atomic_write
from validator.state import ValidatorState
from verification.bundle import bundle_hash, completion_digest, decode_bundle, row_digest
from verification.canonical import canonical_json
from verification.challenge import groups_to_check, opening_seed, window_deadline_block, window_of_block, window_start_block
from verification.commitment import decode_commitment
from verification.constants import PROTOCOL_VERSION
from verification.errors import (
    BeaconUnavailableError,
    BundleFormatError,
    ChainError,
    CheckpointError,
    CommitmentFormatError,
    StorageError,
)
from verification.model import LoadedModel
from verification.scoring import MinerOutcome, MinerScore, combine_windows, score_window, verified_root
from verification.verifier import Expectation, Verifier, format_verdict

log = logging.getLogger("rollproof.validator")
MAX_CONSECUTIVE_FAILURES = 10  # transient beacon/chain failures retried before giving up
# finished windows whose fetched bundles stay on disk for audit (48 x 20 blocks x 12 s = 3.2 hours);
# every bundle is up to MAX_BUNDLE_BYTES, so an unbounded archive would fill the disk
DEFAULT_KEEP_BUNDLES = 48
# after an outage, closed windows processed to catch up (older ones are skipped with a warning):
# each costs a full verification, and miners need not keep old bundles online
MAX_CATCH_UP_WINDOWS = 3

# validator-level reasons (before the Verifier runs), in check order
VALIDATOR_REASONS = ("bad_commitment", "fetch_failed", "hash_mismatch")


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
                 state_dir, *, beacon_cache: BeaconCache | None = None, batch_size: int = 8,
                 networks=None, resolver=None,
                 keep_bundles: int | None = DEFAULT_KEEP_BUNDLES, max_catch_up: int = MAX_CATCH_UP_WINDOWS):
        """`resolver` (adapters.checkpoints.ModelResolver) picks and verifies the checkpoint in force
        for each window from chain data; without one every window uses `lm`."""
        self.chain = chain
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.lm = lm
        self.beacons = beacons
        self.fetcher = fetcher
        self.state = ValidatorState(state_dir)
        self.beacon_cache = beacon_cache
        self.networks = list(networks or [beacons.info])
        self.batch_size = batch_size
        self.resolver = resolver
        self._verifiers: dict[bytes, Verifier] = {}
        self.keep_bundles = keep_bundles  # None keeps every bundle
        self.max_catch_up = max(1, max_catch_up)

    def model_for(self, window: int) -> LoadedModel:
        """The checkpoint in force for window (CheckpointError when it cannot be verified)."""
        return self.lm if self.resolver is None else self.resolver.model_for(window)

    def verifier_for(self, lm: LoadedModel) -> Verifier:
        v = self._verifiers.get(lm.fingerprint)
        if v is None:
            if len(self._verifiers) >= 4:
                self._verifiers.clear()
            v = self._verifiers[lm.fingerprint] = Verifier(lm, self.networks, batch_size=self.batch_size)
        return v

    # ---- one miner ------------------------------------------------------------------------------
    def verify_commitment(self, window: int, rec: CommitmentRecord, expected: Expectation, open_seed: bytes,
                          progress: Callable[[int], None] | None = None,
                          verifier: Verifier | None = None) -> tuple[MinerOutcome, dict]:
        verifier = verifier or self.verifier_for(self.lm)
        def fail(reason: str, detail: str, audit: dict | None = None):
            return MinerOutcome(rec.uid, rec.hotkey, False, reason, detail, rec.block), audit or {}

        try:
            c = decode_commitment(rec.data)
        except CommitmentFormatError as exc:
            return fail("bad_commitment", str(exc))
        audit = {"bundle_hash": c.bundle_hash.hex(), "location": c.location, "checked_groups": [], "rollouts": []}
        if c.window != window:
            return fail("bad_commitment", f"commitment names window {c.window}, landed in window {window}", audit)
        try:
            data = self.fetcher.fetch(c.location)
        except StorageError as exc:
            return fail("fetch_failed", str(exc), audit)
        if bundle_hash(data) != c.bundle_hash:
            return fail("hash_mismatch", "the fetched file is not the committed bundle", audit)
        atomic_write(self.state.bundle_path(window, rec.uid), data)
        try:
            bundle = decode_bundle(data)
        except BundleFormatError as exc:
            return fail(format_verdict(exc).reason, str(exc), audit)
        # the signed root: if it is not the rows' real root, the Verifier rejects every row anyway
        groups = groups_to_check(open_seed, rec.hotkey, bytes.fromhex(bundle.header.rows_root),
                                 bundle.header.n_groups)
        audit["checked_groups"] = groups
        verdict = verifier.verify(bundle, expected, groups=groups, progress=progress)
        audit["rollouts"] = [{"group": v.group, "rollout": v.rollout, "reason": v.reason, "detail": v.detail}
                             for v in verdict.rollouts if v.reason != "not_checked"]
        by_row = {(v.group, v.rollout): v for v in verdict.rollouts}
        digests = [completion_digest(g.prompt, r) for g, r in bundle.rows()]
        verified = [row_digest(g.index, g.environment, g.prompt, r) for g, r in bundle.rows()
                    if by_row[(g.index, r.index)].ok]
        return MinerOutcome(rec.uid, rec.hotkey, verdict.ok, verdict.reason, verdict.detail, rec.block,
                            digests, verified if verdict.ok else []), audit

    # ---- one window -----------------------------------------------------------------------------
    def uid(self) -> int:
        uid = self.chain.uid_of(self.hotkey)
        if uid is None:
            raise ChainError(f"validator hotkey {self.hotkey} is not registered on netuid {self.chain.netuid}")
        return uid

    def ready(self, window: int) -> bool:
        """True once the window's opening beacon exists (after its deadline plus the buffer)."""
        if self.chain.current_block() < window_deadline_block(window):
            return False
        try:
            opening_randomness(self.chain, self.beacons, window, self.beacon_cache)
        except BeaconUnavailableError:
            return False
        return True

    def process_window(self, window: int, *, on_miner: Callable[[MinerOutcome], None] | None = None,
                       progress_factory: Callable[[int, int], Callable[[int], None] | None] | None = None) -> WindowResult:
        """Score window and write its ledger entry and weights. Raises BeaconUnavailableError while the
        opening round is not out, ChainError when the chain cannot be read or written."""
        my_uid = self.uid()
        stage = self.state.stage(window)
        if stage == "checkpoint_failed":
            detail = self.state.checkpoint_error(window)
            return WindowResult(window, {}, b"", [], False, False, checkpoint_error=detail)
        if stage is None:
            try:
                lm = self.model_for(window)
            except CheckpointError as exc:
                log.error("window %d skipped: its checkpoint cannot be verified: %s", window, exc)
                self.state.save_checkpoint_error(window, str(exc))
                return WindowResult(window, {}, b"", [], False, False, checkpoint_error=str(exc))
            report = self._score(window, lm, on_miner, progress_factory)
            self.state.save_report(window, canonical_json(report))
            self.state.set_stage(window, "scored")
            stage = "scored"
        report_bytes = self.state.report_path(window).read_bytes()
        report = json.loads(report_bytes)
        report_hash = hashlib.sha256(report_bytes).digest()
        uids = [m["uid"] for m in report["miners"]]
        weights = [m["weight"] for m in report["miners"]]
        wrote_ledger = wrote_weights = False
        if stage == "scored":
            if self.chain.ledger_entry(my_uid, window) is None:
                self.chain.record_scores(self.keypair, window, uids, weights,
                                         bytes.fromhex(report["verified_root"]), report_hash)
                wrote_ledger = True
            self.state.set_stage(window, "ledgered")
            stage = "ledgered"
        if stage == "ledgered":
            done = self.chain.weights_window(my_uid)
            if done is not None and done >= window:
                self.state.set_stage(window, "weights_set")
            elif not self.chain.weights_ready(my_uid):
                log.info("window %d: the chain's weight rate limit has not passed; its scores count in the "
                         "next window's weights", window)
                self.state.set_stage(window, "weights_skipped")
            else:
                set_uids, set_weights = self._weights_to_set(window, report, uids, weights)
                if any(set_weights):
                    self.chain.set_weights(self.keypair, window, set_uids, set_weights)
                    wrote_weights = True
                else:
                    log.warning("window %d: every miner scored zero; weights left unchanged", window)
                self.state.set_stage(window, "weights_set")
        scores = [MinerScore(m["uid"], m["hotkey"], m["reason"], m["detail"], m["unique_rollouts"],
                             m["copied_rollouts"], m["score"], m["weight"], m["verdict"]) for m in report["miners"]]
        return WindowResult(window, report, report_hash, scores, wrote_ledger, wrote_weights)

    def _weights_to_set(self, window: int, report: dict, uids: list[int], weights: list[int]) -> tuple[list[int], list[int]]:
        """This window's weights, or, after windows skipped by the chain's rate limit, the weights of
        their scores and this window's summed (verification.scoring.combine_windows)."""
        skipped = self.state.skipped_run_before(window)
        if not skipped:
            return uids, weights
        reports = [json.loads(self.state.report_path(w).read_bytes()) for w in skipped] + [report]
        registered = {n.uid: n.hotkey for n in self.chain.neurons()}
        rows = [[(m["uid"], m["hotkey"], float(m["score"])) for m in r["miners"]] for r in reports]
        log.info("window %d: weights over windows %s", window, ", ".join(map(str, skipped + [window])))
        return combine_windows(rows, registered)

    def _score(self, window, lm: LoadedModel, on_miner, progress_factory) -> dict:
        open_round, open_beacon = opening_randomness(self.chain, self.beacons, window, self.beacon_cache)
        start = self.chain.block(window_start_block(window))
        expected_base = dict(netuid=self.chain.netuid, window=window, block_hash=start.hash,
                             block_time=start.timestamp, fingerprint=lm.fingerprint)
        verifier = self.verifier_for(lm)
        seed = opening_seed(self.chain.netuid, window, open_beacon.randomness)
        outcomes: list[MinerOutcome] = []
        audits: dict[int, dict] = {}
        records = sorted(self.chain.commitments(window), key=lambda r: r.uid)
        for rec in records:
            if rec.hotkey == self.hotkey:
                continue
            saved = self.state.outcome(window, rec.uid)
            if saved is None:
                progress = progress_factory(rec.uid, len(records)) if progress_factory else None
                saved = self.verify_commitment(window, rec, Expectation(hotkey=rec.hotkey, **expected_base), seed,
                                               progress, verifier)
                self.state.save_outcome(window, *saved)
            outcome, audit = saved
            outcomes.append(outcome)
            audits[outcome.uid] = audit
            if on_miner:
                on_miner(outcome)
        scores = score_window(outcomes)
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
    def next_window(self) -> int:
        """The oldest closed window not finished yet: the last closed one when the journal is empty,
        and never more than max_catch_up closed windows back (after a long outage)."""
        head = self.chain.current_block()
        last_closed = window_of_block(head) - 1
        finished = self.state.last_finished_window()
        if finished is None:
            return last_closed
        nxt = min(finished + 1, last_closed + 1)
        oldest = last_closed - self.max_catch_up + 1
        if nxt < oldest:
            log.warning("journal ends at window %d, %d windows behind: skipping windows %d..%d (their bundles "
                        "may be gone and their weights are stale); resuming at %d", finished,
                        last_closed - finished, nxt, oldest - 1, oldest)
            return oldest
        return nxt

    def run(self, stop: threading.Event, *, max_windows: int | None = None,
            on_result: Callable[[WindowResult], None] | None = None, poll_s: float = 2.0, **kw) -> list[WindowResult]:
        results: list[WindowResult] = []
        failures = 0
        while not stop.is_set():
            window = self.next_window()
            try:
                result = self.process_window(window, **kw) if window >= 0 and self.ready(window) else None
                failures = 0
            except (BeaconUnavailableError, ChainError) as exc:
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise
                log.warning("window %d: %s; retrying at the next block (%d/%d)", window, exc, failures,
                            MAX_CONSECUTIVE_FAILURES)
                result = None
            if result is not None:
                results.append(result)
                if self.keep_bundles is not None:
                    self.state.prune_bundles(result.window + 1 - self.keep_bundles)
                if on_result:
                    on_result(result)
                if max_windows is not None and len(results) >= max_windows:
                    break
                continue
            target = max(self.chain.current_block() + 1, window_deadline_block(max(window, 0)))
            if self.chain.wait_for_block(target, stop, poll_s) is None:
                break
        return results
