"""The miner's window loop: derive the window's problems, generate GRPO groups with proofs, write
the signed bundle, upload it, commit its hash and location on chain.

Crash safety: each window's progress is journaled in `state_dir/windows/<w>.json` (built ->
uploaded -> committed) and the bundle bytes are kept in `state_dir/bundles/<w>.rpb`, so a restart
within the window reuses the same bytes and never commits twice (the chain also refuses a second
commitment for a window).

Timing: a commitment is sent only if it can land in its window (`commit_blocks_left`); a window
whose journal was left at built/uploaded when its deadline passed (a crash, a failed commit) is
closed as committed or missed. The miner journals how many blocks its last generation took
(`state_dir/timing.json`) and does not start a window late with fewer blocks left than that: it
waits for the next window's start, where it has the whole window. The estimate decays while it
keeps the miner idle (MinerState.generation_estimate: halved for every window skipped since the
last generation), so one very slow generation never parks a miner for good.

Outages: `run` never exits because the chain, the store or the drand relays are down, however
long: it retries with capped exponential backoff (adapters/outage.py), logs one line when a
dependency goes down and one when it is back, and resumes from the journal. It stops only on
ChainRefusedError (not registered, an EVM key that does not own the uid: `preflight` checks both
before any work).

Metrics (miner/metrics.py, labelled by the miner's uid; adapters/telemetry.py's NodeMetrics with
role "miner"): every window's outcome is counted once, when the journal first records it
(committed or missed in windows/<w>.json; skipped for lack of time in timing.json's skip count; a
window before the beacon's first round once per process), so a resumed window or a restart never
counts twice; each generation's seconds, blocks over the window, tokens and the engine's decode and
proof seconds (miner/timing.py); upload results, commit latency, the bundle's size; and after each
window what validators said of this miner (miner/scores.py, journaled in state_dir/scores/). Every
state-change log line moves one: skipped, missed and committed windows, a resumed bundle, a
dependency down or back (adapters/outage.py)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from miner.engines import Engine, HFEngine
from miner.metrics import MinerMetrics
from miner.proof import assemble_bundle, build_groups
from miner.scores import ScoreJournal, read_scores
from miner.timing import GenerationTiming
from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import Chain
from adapters.files import atomic_write
from adapters.outage import Backoff, Outages
from adapters.storage import BundleStore
from adapters.telemetry import NodeMetrics, metrics_of, set_build_info
from adapters.windows import window_context
from verification.bundle import Bundle, bundle_hash, encode_bundle
from verification.challenge import window_deadline_block, window_of_block, window_start_block
from verification.commitment import bundle_name, encode_commitment
from verification.constants import ACTIVATION_WINDOWS, WINDOW_BLOCKS
from verification.errors import (
    BeaconUnavailableError,
    ChainError,
    ChainRefusedError,
    CheckpointError,
    ConfigError,
    EngineError,
    EngineProtocolError,
    GenerationAborted,
    StorageError,
    WindowBeforeBeaconError,
)
from verification.model import LoadedModel
from verification.window import WindowContext
from miner.defaults import DEFAULT_BATCH_SIZE, DEFAULT_KEEP_BUNDLES

log = logging.getLogger("rollproof.miner")


@dataclass
class WindowRecord:
    window: int
    stage: str  # "built" | "uploaded" | "committed" | "missed"; "skipped" (returned, not journaled)
    bundle_hash: str = ""
    location: str = ""
    n_groups: int = 0
    n_tokens: int = 0
    detail: str = ""


def commit_blocks_left(window: int, current_block: int) -> int:
    """Blocks in which a commitment sent now can still land in its window.

    A transaction sent while `current_block` is the head is included in block current_block + 1 at
    the earliest, and the registry accepts a commitment only in a block of its own window
    (SubnetRegistry.commit: window == block.number // window_blocks), i.e. strictly before
    window_deadline_block(window), the block at which validators open the window. One sent in the
    window's last block lands at the deadline and reverts, so the miner sends it only while this
    is at least 1."""
    return window_deadline_block(window) - (current_block + 1)


class MinerState:
    def __init__(self, root: Path, engine: str = "hf"):
        """`engine`: the generation engine in use; a timing measured with another engine is no
        estimate for this one (timing.json names its engine)."""
        self.root = Path(root).expanduser()
        self.engine = engine
        (self.root / "windows").mkdir(parents=True, exist_ok=True)
        (self.root / "bundles").mkdir(parents=True, exist_ok=True)

    def record(self, window: int) -> WindowRecord | None:
        path = self.root / "windows" / f"{window}.json"
        if not path.is_file():
            return None
        return WindowRecord(**json.loads(path.read_text()))

    def save(self, rec: WindowRecord) -> None:
        atomic_write(self.root / "windows" / f"{rec.window}.json", json.dumps(asdict(rec)).encode())

    def bundle_path(self, window: int) -> Path:
        return self.root / "bundles" / f"{window}.rpb"

    def open_windows(self) -> list[int]:
        """Windows whose journal stops at built or uploaded (neither committed nor missed yet)."""
        out = []
        for path in (self.root / "windows").glob("*.json"):
            if path.stem.isdigit() and json.loads(path.read_text()).get("stage") in ("built", "uploaded"):
                out.append(int(path.stem))
        return sorted(out)

    def _timing(self) -> dict:
        path = self.root / "timing.json"
        timing = json.loads(path.read_text()) if path.is_file() else {}
        # journals from before engines were named measured the hf engine
        return timing if timing.get("engine", "hf") == self.engine else {}

    def generation_blocks(self) -> int | None:
        """Blocks the last generation took, from window context to uploaded bundle (None: never measured)."""
        timing = self._timing()
        return int(timing["generation_blocks"]) if "generation_blocks" in timing else None

    def set_generation_blocks(self, blocks: int) -> None:
        """A new measurement: it replaces the estimate and clears the count of skipped windows."""
        atomic_write(self.root / "timing.json",
                     json.dumps({"generation_blocks": int(blocks), "engine": self.engine}).encode())

    def skipped_windows(self) -> int:
        """Windows skipped for lack of time since the last measured generation."""
        return int(self._timing().get("skipped", 0))

    def record_skip(self, window: int) -> int:
        """Count `window` as skipped (once, however often it is retried). Returns the count."""
        timing = self._timing()
        if timing.get("last_skipped") != window:
            timing["skipped"] = int(timing.get("skipped", 0)) + 1
            timing["last_skipped"] = window
            timing["engine"] = self.engine
            atomic_write(self.root / "timing.json", json.dumps(timing).encode())
        return int(timing.get("skipped", 0))

    def generation_estimate(self) -> int | None:
        """The blocks the next generation is expected to take: the last measurement halved for
        every window skipped since (generation_blocks // 2**skipped_windows), None if never measured.

        The rule: a window started late is skipped when its blocks left for a commitment are at
        most this estimate (Miner.prepare_window; a window's first block is always tried). Each skip
        halves the estimate, so a miner whose one measured generation was very slow (a loaded
        machine, a cold cache) and that keeps arriving after the first block (a poll slower than
        the block time) tries again after at most log2(estimate) + 1 skipped windows (fewer the
        more blocks it has left); that generation re-measures it. A miner that really is that slow
        spends at most every other late window on a try that misses, instead of waiting forever."""
        measured = self.generation_blocks()
        if measured is None:
            return None
        return measured >> min(self.skipped_windows(), 62)

    def prune_bundles(self, before_window: int) -> int:
        """Delete the kept bundle bytes of windows before `before_window` (they only serve a restart
        inside their own window; the journal records stay). Returns how many were deleted."""
        removed = 0
        for path in (self.root / "bundles").glob("*.rpb"):
            if path.stem.isdigit() and int(path.stem) < before_window:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class Miner:
    def __init__(self, chain: Chain, keypair, lm: LoadedModel, store: BundleStore, beacons: BeaconSource,
                 state_dir: Path, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 beacon_cache: BeaconCache | None = None, keep_bundles: int = DEFAULT_KEEP_BUNDLES,
                 resolver=None, backoff: Backoff | None = None, engine: Engine | None = None,
                 registry: CollectorRegistry | None = None):
        """`resolver` (adapters.checkpoints.ModelResolver) picks and verifies the checkpoint in force
        for each window from chain data; without one every window uses `lm`. `self.lm` is the model
        of the window being mined. `backoff`: the retry delays of `run` during outages. `engine`:
        the generation engine (miner/engines.py; default the HF engine at `batch_size`).
        `registry`: the process's Prometheus registry (None: a private one)."""
        if keep_bundles < 1:
            raise ConfigError("keep_bundles must be at least 1 (the current window's bundle)")
        self.chain = chain
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.lm = lm
        self.base_lm = lm
        self.resolver = resolver
        self.store = store
        self.beacons = beacons
        self.batch_size = batch_size
        self.engine = engine if engine is not None else HFEngine(batch_size)
        self.state = MinerState(state_dir, self.engine.name)
        self.beacon_cache = beacon_cache
        self.keep_bundles = keep_bundles
        self.metrics = metrics_of(MinerMetrics, registry)
        self.node_metrics = metrics_of(NodeMetrics, registry)
        set_build_info(self.node_metrics, "miner")
        self.outages = Outages(log, backoff, metrics=self.node_metrics, role="miner")
        self.scores = ScoreJournal(self.state.root)
        self.uid: int | None = None  # known after preflight, else looked up on the chain once
        self._uid_asked = False
        self._in_hand: set[int] = set()  # windows whose bundle this process built or already resumed
        self._skips_counted: set[int] = set()  # windows skipped before the beacon's first round
        self._window = -1  # the newest window worked on (rollproof_window)
        self._scores_read = -1  # the newest window after which validators' scores were read

    def preflight(self) -> int:
        """Before any work: the chain will take this hotkey's commitments (registered; on EVM chains
        the EVM key owns the uid). Returns the uid; ChainRefusedError says what to fix."""
        self.uid = self.chain.preflight(self.keypair)
        return self.uid

    # ---- metrics --------------------------------------------------------------------------------
    def _uid(self) -> int | None:
        """This miner's uid: from preflight, else the chain's uid_of, asked once (again only after
        the chain could not answer); None for a hotkey the chain does not know."""
        if self.uid is None and not self._uid_asked:
            try:
                self.uid = self.chain.uid_of(self.hotkey)
                self._uid_asked = True
            except ChainError:
                return None
        return self.uid

    def _label(self) -> str:
        uid = self._uid()
        return "" if uid is None else str(uid)

    def _block(self) -> int:
        """The chain's newest block (rollproof_chain_block follows it)."""
        block = self.chain.current_block()
        self.node_metrics.chain_block.labels("miner").set(block)
        return block

    def _finish(self, rec: WindowRecord) -> None:
        """Journal a committed or missed record; the outcome is counted the first time the journal
        holds it (a resumed or settled window is not counted again)."""
        before = self.state.record(rec.window)
        self.state.save(rec)
        if before is None or before.stage != rec.stage:
            self.metrics.windows.labels(self._label(), rec.stage).inc()

    def _skipped(self, window: int, why: str, counted: bool) -> WindowRecord:
        """A skipped window (logged by the caller); counted unless `counted` says it was already."""
        if not counted:
            self.metrics.windows.labels(self._label(), "skipped").inc()
        return WindowRecord(window, "skipped", detail=why)

    def _record_generation(self, seconds: float, engine_before: GenerationTiming | None, n_tokens: int,
                           size: int) -> None:
        uid = self._label()
        m = self.metrics
        m.generation_seconds.labels(uid).observe(seconds)
        m.tokens.labels(uid).inc(n_tokens)
        m.tokens_per_second.labels(uid).set(n_tokens / seconds if seconds > 0 else 0.0)
        m.bundle_bytes.labels(uid).set(size)
        timing = getattr(self.engine, "timing", None)
        if engine_before is not None and timing is not None:
            spent = timing.since(engine_before)
            m.decode_seconds.labels(uid).inc(max(0.0, spent.decode_s))
            m.proof_seconds.labels(uid).inc(max(0.0, spent.proof_s))
            if spent.proof_share is not None:
                m.proof_share.labels(uid).set(spent.proof_share)

    def observe_scores(self, window: int) -> list | None:
        """After `window`: read what validators said of this miner (miner/scores.py), set the
        rollproof_miner_validator_* metrics and journal it in state_dir/scores/. Once per window;
        never fails the window: a chain that cannot be read is one outage line (Outages) and the
        read is skipped. Returns the views read (None: skipped)."""
        if window <= self._scores_read:
            return None
        self._scores_read = window
        try:
            uid = self._uid()
            if uid is None:
                return None
            views = read_scores(self.chain, uid, window)
        except ChainError as exc:
            self.outages.chain.failed(exc)
            return None
        self.outages.chain.ok()
        label = str(uid)
        for v in views:
            vuid = str(v.validator_uid)
            if v.scored_window is not None:
                self.metrics.validator_score.labels(label, vuid).set(v.score_share)
                self.metrics.validator_scored_window.labels(label, vuid).set(v.scored_window)
            self.metrics.validator_weight.labels(label, vuid).set(v.weight_share)
        try:
            self.scores.write(window, uid, views)
        except OSError as exc:
            log.warning("window %d: cannot journal the validators' scores in %s: %s", window, self.scores.dir, exc)
        return views

    @property
    def n_groups(self) -> int:
        """Groups per bundle: the generation params of the window's checkpoint fix it (all of the
        window's problems or none; a bundle of another count is rejected as bad_params)."""
        return self.lm.generation.groups

    # ---- the bundle; cheating miners in rollproof/localnet override this ----------------------
    def make_bundle(self, ctx: WindowContext, on_tokens: Callable[[int], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Bundle:
        groups = build_groups(self.lm, ctx, self.hotkey, list(range(self.n_groups)), engine=self.engine,
                              on_tokens=on_tokens, should_stop=should_stop)
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, groups, self.lm.generation)

    # ---- one window -----------------------------------------------------------------------------
    def run_window(self, window: int, on_tokens: Callable[[int], None] | None = None) -> WindowRecord:
        """One window, start to end (idempotent: a second call resumes from the journal). Raises
        ChainError, StorageError or BeaconUnavailableError when a dependency fails on the way."""
        rec = self._run_window(window, on_tokens)
        self.observe_scores(window)
        return rec

    def _run_window(self, window: int, on_tokens: Callable[[int], None] | None = None) -> WindowRecord:
        rec = self.prepare_window(window, on_tokens)
        return self.commit_window(rec) if rec.stage == "uploaded" else rec

    def prepare_window(self, window: int, on_tokens: Callable[[int], None] | None = None) -> WindowRecord:
        """Everything before the commitment transaction: the journal, the chain's record, the
        bundle (built or resumed) and its upload. Returns the record at "uploaded", or a final one
        (committed, missed, skipped)."""
        rec = self.state.record(window)
        if rec is not None and rec.stage in ("committed", "missed"):
            return rec
        if self.chain.commitment_of(self.hotkey, window) is not None:
            rec = rec or WindowRecord(window, "committed")
            rec.stage = "committed"
            rec.detail = rec.detail or "commitment found on chain"
            self._finish(rec)
            return rec
        self._uid()  # the chain answers now: learn the uid the metrics are labelled with
        deadline = window_deadline_block(window)
        started = self._block()
        if window > self._window:
            self._window = window
            self.node_metrics.window.labels("miner").set(window)
        left = commit_blocks_left(window, started)
        if left < 1:
            return self._missed(window, rec, f"no block left before the deadline block {deadline} for a commitment to land")

        path = self.state.bundle_path(window)
        generated = False
        if rec is not None and path.is_file():
            data = path.read_bytes()
            if window not in self._in_hand:  # once, not at every retry of an upload
                log.info("window %d: resuming with the bundle built before the restart", window)
                self.metrics.resumed_windows.labels(self._label()).inc()
                self._in_hand.add(window)
        else:
            # a late start that the last generation's duration says cannot commit in time waits for
            # the next window; a window's first block is always tried (and re-measured), so a miner
            # slower than a whole window once is not parked forever
            # the next generation re-measures; the estimate decays with every skip (generation_estimate)
            estimate = self.state.generation_estimate()
            at_start = commit_blocks_left(window, window_start_block(window))
            if estimate is not None and left <= min(estimate, at_start - 1):
                before = self.state.skipped_windows()
                skipped = self.state.record_skip(window)
                why = (f"{left} blocks left for the commitment and generation takes about {estimate}: "
                       f"waiting for window {window + 1} ({skipped} skipped since the last generation)")
                log.info("window %d: %s", window, why)
                return self._skipped(window, why, counted=skipped == before)
            generated = True
            try:
                ctx = window_context(self.chain, self.beacons, window, self.beacon_cache)
            except WindowBeforeBeaconError as exc:  # a fresh chain's first window: nothing to mine
                log.info("window %d: %s", window, exc)
                counted = window in self._skips_counted
                self._skips_counted.add(window)
                return self._skipped(window, str(exc), counted)
            self.outages.beacon.ok()
            try:
                self.lm = self.base_lm if self.resolver is None else self.resolver.model_for(window)
            except CheckpointError as exc:
                return self._missed(window, rec, f"the window's checkpoint cannot be verified: {exc}")
            self.node_metrics.checkpoint_version.labels("miner").set(int(self.lm.meta.get("checkpoint_version", 0)))
            timing = getattr(self.engine, "timing", None)
            engine_before = timing.copy() if timing is not None else None
            generating = time.monotonic()
            try:
                bundle = self.make_bundle(ctx, on_tokens, self._past_deadline(window))
            except GenerationAborted as exc:
                return self._missed(window, rec, f"generation stopped: the commitment can no longer land ({exc})")
            except EngineProtocolError as exc:  # nothing was signed or published
                return self._missed(window, rec, f"the {self.engine.name} engine broke the sampling rule, "
                                                 f"nothing signed: {exc}")
            except EngineError as exc:  # e.g. a checkpoint the running engine cannot take
                return self._missed(window, rec, f"the {self.engine.name} engine cannot generate this window: {exc}")
            data = encode_bundle(bundle)
            rec = WindowRecord(window, "built", bundle_hash(data).hex(), n_groups=bundle.header.n_groups,
                               n_tokens=sum(len(r.completion) for _, r in bundle.rows()))
            self._record_generation(time.monotonic() - generating, engine_before, rec.n_tokens, len(data))
            atomic_write(path, data)
            self.state.save(rec)
            self._in_hand.add(window)

        if rec.stage == "built":
            # the canonical name under the store's base: the commitment then carries only the base
            try:
                location = self.store.put(bundle_name(window, bytes.fromhex(rec.bundle_hash)), data)
            except StorageError:
                self.metrics.store_writes.labels(self._label(), "failed").inc()
                raise
            self.metrics.store_writes.labels(self._label(), "ok").inc()
            self.outages.store.ok()
            rec.stage, rec.location = "uploaded", location
            self.state.save(rec)
        if generated:
            blocks = self._block() - started
            self.state.set_generation_blocks(blocks)
            self.metrics.generation_window_fraction.labels(self._label()).set(blocks / WINDOW_BLOCKS)
        return rec

    def _past_deadline(self, window: int) -> Callable[[], bool]:
        """should_stop for the window's generation: True once a commitment could no longer land (a
        chain that does not answer is not a reason to stop: the commit step retries)."""
        def past() -> bool:
            try:
                return commit_blocks_left(window, self._block()) < 1
            except ChainError:
                return False
        return past

    def commit_window(self, rec: WindowRecord) -> WindowRecord:
        """Send the commitment of an uploaded window, if it can still land in its window."""
        window = rec.window
        deadline = window_deadline_block(window)
        if commit_blocks_left(window, self._block()) < 1:
            return self._missed(window, rec, f"generation finished too late: no block left before the deadline "
                                             f"block {deadline} for the commitment to land")
        sent = time.monotonic()
        try:
            self.chain.commit(self.keypair, window,
                              encode_commitment(window, bytes.fromhex(rec.bundle_hash), rec.location))
        except ChainRefusedError:
            raise
        except ChainError as exc:
            if self.chain.commitment_of(self.hotkey, window) is None:
                if commit_blocks_left(window, self.chain.current_block()) < 1:
                    return self._missed(window, rec, f"the commitment did not land before the deadline "
                                                     f"block {deadline}: {exc}")
                raise
        self.metrics.commit_latency_seconds.labels(self._label()).observe(time.monotonic() - sent)
        self.outages.writes.ok()
        rec.stage = "committed"
        self._finish(rec)
        log.info("window %d: committed %s at %s", window, rec.bundle_hash[:16], rec.location)
        return rec

    def _missed(self, window: int, rec: WindowRecord | None, why: str) -> WindowRecord:
        rec = rec or WindowRecord(window, "missed")
        rec.stage, rec.detail = "missed", why
        self._finish(rec)
        log.warning("window %d: %s", window, why)
        return rec

    def settle_open_windows(self, before_window: int) -> list[WindowRecord]:
        """Close the journal of windows before `before_window` left at built/uploaded (a crash, or a
        failure the loop moved past): committed if the chain holds the commitment, else missed."""
        return [self._run_window(w) for w in self.state.open_windows() if w < before_window]

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, max_windows: int | None = None,
            on_window: Callable[[WindowRecord], None] | None = None,
            on_tokens_factory: Callable[[int], Callable[[int], None] | None] | None = None,
            poll_s: float = 2.0, preflight: bool = True) -> list[WindowRecord]:
        """Mine every window until `stop` (or `max_windows` windows were reported). Transient
        ChainError, StorageError and BeaconUnavailableError are retried with backoff for as long as
        they last; ChainRefusedError is raised. preflight=False: the caller ran `preflight` already
        (the CLI, before loading the model); a refused commitment still runs it again."""
        done: list[WindowRecord] = []
        reported: set[int] = set()
        checked = not preflight  # preflight passed
        unsettled = True  # a restart (or an outage) may leave earlier windows at built/uploaded
        tokens: tuple[int | None, Callable[[int], None] | None] = (None, None)
        while not stop.is_set():
            committing = False
            try:
                if not checked:
                    uid = self.preflight()
                    log.info("hotkey %s holds uid %d on netuid %d", self.hotkey, uid, self.chain.netuid)
                    checked = True
                window = window_of_block(self._block())
                if tokens[0] != window:  # one progress callback per window, not per retry
                    tokens = (window, on_tokens_factory(window) if on_tokens_factory else None)
                if unsettled:
                    self.settle_open_windows(window)
                    unsettled = False
                rec = self.prepare_window(window, tokens[1])
                if rec.stage == "uploaded":
                    committing = True
                    rec = self.commit_window(rec)
            except ChainRefusedError:
                raise
            except (BeaconUnavailableError, StorageError, ChainError) as exc:
                unsettled = True
                if stop.wait(self._failed(exc, committing)):
                    break
                continue
            self.outages.chain.ok()
            self.observe_scores(window)
            if self.resolver is not None:  # replay an announced checkpoint before its first window
                self.resolver.prepare(window + ACTIVATION_WINDOWS)
            if rec.stage != "skipped" and rec.window not in reported:  # a skipped window was logged
                reported.add(rec.window)
                done.append(rec)
                self.state.prune_bundles(window + 1 - self.keep_bundles)
                if on_window:
                    on_window(rec)
                if max_windows is not None and len(done) >= max_windows:
                    break
            if not self.outages.wait_for_block(self.chain, window_start_block(window + 1), stop, poll_s):
                break
        return done

    def _failed(self, exc: Exception, committing: bool) -> float:
        """Record a failure with the dependency it belongs to; returns the delay before the retry.
        A commitment that fails while the chain still answers reads is the chain refusing it (its
        text says why), not the chain being unreachable."""
        dep = self.outages.for_error(exc)
        if committing and isinstance(exc, ChainError) and _answers(self.chain):
            dep = self.outages.writes
            try:
                self.preflight()  # a refusal because the hotkey lost its uid is for good: raise it
            except ChainRefusedError:
                raise
            except ChainError:
                pass  # cannot tell now; the retry asks again
        return dep.failed(exc)


def _answers(chain: Chain) -> bool:
    try:
        chain.current_block()
    except ChainError:
        return False
    return True
