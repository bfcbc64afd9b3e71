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
waits for the next window's start, where it has the whole window."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from miner.proof import assemble_bundle, build_groups
from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import Chain
from adapters.files import atomic_write
from adapters.storage import BundleStore, bundle_key
from adapters.windows import window_context
from verification.bundle import Bundle, bundle_hash, encode_bundle
from verification.challenge import window_deadline_block, window_of_block, window_start_block
from verification.commitment import encode_commitment
from verification.errors import BeaconUnavailableError, ChainError, CheckpointError, ConfigError, StorageError
from verification.model import LoadedModel
from verification.window import WindowContext

log = logging.getLogger("rollproof.miner")
MAX_CONSECUTIVE_FAILURES = 10  # transient beacon/storage/chain failures retried before giving up
DEFAULT_KEEP_BUNDLES = 3  # windows whose bundle bytes stay in the journal (a restart needs only the current one)


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
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
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

    def generation_blocks(self) -> int | None:
        """Blocks the last generation took, from window context to uploaded bundle (None: never measured)."""
        path = self.root / "timing.json"
        return int(json.loads(path.read_text())["generation_blocks"]) if path.is_file() else None

    def set_generation_blocks(self, blocks: int) -> None:
        atomic_write(self.root / "timing.json", json.dumps({"generation_blocks": int(blocks)}).encode())

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
                 state_dir: Path, *, n_groups: int = 8, batch_size: int = 16,
                 beacon_cache: BeaconCache | None = None, keep_bundles: int = DEFAULT_KEEP_BUNDLES,
                 resolver=None):
        """`resolver` (adapters.checkpoints.ModelResolver) picks and verifies the checkpoint in force
        for each window from chain data; without one every window uses `lm`. `self.lm` is the model
        of the window being mined."""
        if n_groups < 1:
            raise ConfigError("a miner publishes at least one group per window")
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
        self.state = MinerState(state_dir)
        self.n_groups = n_groups
        self.batch_size = batch_size
        self.beacon_cache = beacon_cache
        self.keep_bundles = keep_bundles

    # ---- the bundle; cheating miners in rollproof/localnet override this ----------------------
    def make_bundle(self, ctx: WindowContext, on_tokens: Callable[[int], None] | None = None) -> Bundle:
        groups = build_groups(self.lm, ctx, self.hotkey, list(range(self.n_groups)),
                              batch_size=self.batch_size, on_tokens=on_tokens)
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, groups, self.lm.generation)

    # ---- one window -----------------------------------------------------------------------------
    def run_window(self, window: int, on_tokens: Callable[[int], None] | None = None) -> WindowRecord:
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
            log.info("window %d: resuming with the bundle built before the restart", window)
        else:
            # a late start that the last generation's duration says cannot commit in time waits for
            # the next window; a window's first block is always tried (and re-measured), so a miner
            # slower than a whole window once is not parked forever
            estimate = self.state.generation_blocks()
            at_start = commit_blocks_left(window, window_start_block(window))
            if estimate is not None and left <= min(estimate, at_start - 1):
                why = (f"{left} blocks left for the commitment and generation takes about {estimate}: "
                       f"waiting for window {window + 1}")
                log.info("window %d: %s", window, why)
                return WindowRecord(window, "skipped", detail=why)
            generated = True
            ctx = window_context(self.chain, self.beacons, window, self.beacon_cache)
            try:
                self.lm = self.base_lm if self.resolver is None else self.resolver.model_for(window)
            except CheckpointError as exc:
                return self._missed(window, rec, f"the window's checkpoint cannot be verified: {exc}")
            bundle = self.make_bundle(ctx, on_tokens)
            data = encode_bundle(bundle)
            atomic_write(path, data)
            rec = WindowRecord(window, "built", bundle_hash(data).hex(), n_groups=bundle.header.n_groups,
                               n_tokens=sum(len(r.completion) for _, r in bundle.rows()))
            self.state.save(rec)

        if rec.stage == "built":
            location = self.store.put(bundle_key(self.chain.netuid, window, self.hotkey), data)
            rec.stage, rec.location = "uploaded", location
            self.state.save(rec)
        if generated:
            self.state.set_generation_blocks(self.chain.current_block() - started)

        if commit_blocks_left(window, self.chain.current_block()) < 1:
            return self._missed(window, rec, f"generation finished too late: no block left before the deadline "
                                             f"block {deadline} for the commitment to land")
        try:
            self.chain.commit(self.keypair, window,
                              encode_commitment(window, bytes.fromhex(rec.bundle_hash), rec.location))
        except ChainError as exc:
            if self.chain.commitment_of(self.hotkey, window) is None:
                if commit_blocks_left(window, self.chain.current_block()) < 1:
                    return self._missed(window, rec, f"the commitment did not land before the deadline "
                                                     f"block {deadline}: {exc}")
                raise
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
            on_tokens_factory: Callable[[int], Callable[[int], None] | None] | None = None) -> list[WindowRecord]:
        done: list[WindowRecord] = []
        failures = 0
        unsettled = True  # a restart may find earlier windows left at built/uploaded
        while not stop.is_set():
            window = window_of_block(self.chain.current_block())
            on_tokens = on_tokens_factory(window) if on_tokens_factory else None
            try:
                if unsettled:
                    self.settle_open_windows(window)
                    unsettled = False
                rec = self.run_window(window, on_tokens)
                failures = 0
            except (BeaconUnavailableError, StorageError, ChainError) as exc:
                unsettled = True
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise
                log.warning("window %d: %s; retrying at the next block (%d/%d)", window, exc, failures,
                            MAX_CONSECUTIVE_FAILURES)
                if self.chain.wait_for_block(self.chain.current_block() + 1, stop) is None:
                    break
                continue
            if rec.stage != "skipped":  # a skipped window was logged; wait for the next one's start
                done.append(rec)
                self.state.prune_bundles(window + 1 - self.keep_bundles)
                if on_window:
                    on_window(rec)
                if max_windows is not None and len(done) >= max_windows:
                    break
            if self.chain.wait_for_block(window_start_block(window + 1), stop) is None:
                break
        return done
