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
before any work)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from miner.engines import Engine, HFEngine
from miner.proof import assemble_bundle, build_groups
from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import Chain
from adapters.files import atomic_write
from adapters.outage import Backoff, Outages
from adapters.storage import BundleStore
from adapters.windows import window_context
from verification.bundle import Bundle, bundle_hash, encode_bundle
from verification.challenge import window_deadline_block, window_of_block, window_start_block
from verification.commitment import bundle_name, encode_commitment
from verification.constants import ACTIVATION_WINDOWS
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
                 resolver=None, backoff: Backoff | None = None, engine: Engine | None = None):
        """`resolver` (adapters.checkpoints.ModelResolver) picks and verifies the checkpoint in force
        for each window from chain data; without one every window uses `lm`. `self.lm` is the model
        of the window being mined. `backoff`: the retry delays of `run` during outages. `engine`:
        the generation engine (miner/engines.py; default the HF engine at `batch_size`)."""
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
        self.outages = Outages(log, backoff)
        self._in_hand: set[int] = set()  # windows whose bundle this process built or already resumed

    def preflight(self) -> int:
        """Before any work: the chain will take this hotkey's commitments (registered; on EVM chains
        the EVM key owns the uid). Returns the uid; ChainRefusedError says what to fix."""
        return self.chain.preflight(self.keypair)

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
            self.state.save(rec)
            return rec
        deadline = window_deadline_block(window)
        started = self.chain.current_block()
        left = commit_blocks_left(window, started)
        if left < 1:
            return self._missed(window, rec, f"no block left before the deadline block {deadline} for a commitment to land")

        path = self.state.bundle_path(window)
        generated = False
        if rec is not None and path.is_file():
            data = path.read_bytes()
            if window not in self._in_hand:  # once, not at every retry of an upload
                log.info("window %d: resuming with the bundle built before the restart", window)
                self._in_hand.add(window)
        else:
            # a late start that the last generation's duration says cannot commit in time waits for
            # the next window; a window's first block is always tried (and re-measured), so a miner
            # slower than a whole window once is not parked forever
            # the next generation re-measures; the estimate decays with every skip (generation_estimate)
            estimate = self.state.generation_estimate()
            at_start = commit_blocks_left(window, window_start_block(window))
            if estimate is not None and left <= min(estimate, at_start - 1):
                skipped = self.state.record_skip(window)
                why = (f"{left} blocks left for the commitment and generation takes about {estimate}: "
                       f"waiting for window {window + 1} ({skipped} skipped since the last generation)")
                log.info("window %d: %s", window, why)
                return WindowRecord(window, "skipped", detail=why)
            generated = True
            try:
                ctx = window_context(self.chain, self.beacons, window, self.beacon_cache)
            except WindowBeforeBeaconError as exc:  # a fresh chain's first window: nothing to mine
                log.info("window %d: %s", window, exc)
                return WindowRecord(window, "skipped", detail=str(exc))
            self.outages.beacon.ok()
            try:
                self.lm = self.base_lm if self.resolver is None else self.resolver.model_for(window)
            except CheckpointError as exc:
                return self._missed(window, rec, f"the window's checkpoint cannot be verified: {exc}")
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
            atomic_write(path, data)
            rec = WindowRecord(window, "built", bundle_hash(data).hex(), n_groups=bundle.header.n_groups,
                               n_tokens=sum(len(r.completion) for _, r in bundle.rows()))
            self.state.save(rec)
            self._in_hand.add(window)

        if rec.stage == "built":
            # the canonical name under the store's base: the commitment then carries only the base
            location = self.store.put(bundle_name(window, bytes.fromhex(rec.bundle_hash)), data)
            self.outages.store.ok()
            rec.stage, rec.location = "uploaded", location
            self.state.save(rec)
        if generated:
            self.state.set_generation_blocks(self.chain.current_block() - started)
        return rec

    def _past_deadline(self, window: int) -> Callable[[], bool]:
        """should_stop for the window's generation: True once a commitment could no longer land (a
        chain that does not answer is not a reason to stop: the commit step retries)."""
        def past() -> bool:
            try:
                return commit_blocks_left(window, self.chain.current_block()) < 1
            except ChainError:
                return False
        return past

    def commit_window(self, rec: WindowRecord) -> WindowRecord:
        """Send the commitment of an uploaded window, if it can still land in its window."""
        window = rec.window
        deadline = window_deadline_block(window)
        if commit_blocks_left(window, self.chain.current_block()) < 1:
            return self._missed(window, rec, f"generation finished too late: no block left before the deadline "
                                             f"block {deadline} for the commitment to land")
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
        self.outages.writes.ok()
        rec.stage = "committed"
        self.state.save(rec)
        log.info("window %d: committed %s at %s", window, rec.bundle_hash[:16], rec.location)
        return rec

    def _missed(self, window: int, rec: WindowRecord | None, why: str) -> WindowRecord:
        rec = rec or WindowRecord(window, "missed")
        rec.stage, rec.detail = "missed", why
        self.state.save(rec)
        log.warning("window %d: %s", window, why)
        return rec

    def settle_open_windows(self, before_window: int) -> list[WindowRecord]:
        """Close the journal of windows before `before_window` left at built/uploaded (a crash, or a
        failure the loop moved past): committed if the chain holds the commitment, else missed."""
        return [self.run_window(w) for w in self.state.open_windows() if w < before_window]

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
                window = window_of_block(self.chain.current_block())
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
