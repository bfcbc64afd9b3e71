"""The miner's window loop: derive the window's problems, generate GRPO groups with proofs, write
the signed bundle, upload it, commit its hash and location on chain.

Crash safety: each window's progress is journaled in `state_dir/windows/<w>.json` (built ->
uploaded -> committed) and the bundle bytes are kept in `state_dir/bundles/<w>.rpb`, so a restart
within the window reuses the same bytes and never commits twice (the chain also refuses a second
commitment for a window)."""

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
from verification.errors import BeaconUnavailableError, ChainError, ConfigError, StorageError
from verification.model import LoadedModel
from verification.window import WindowContext

log = logging.getLogger("rollproof.miner")
MAX_CONSECUTIVE_FAILURES = 10  # transient beacon/storage/chain failures retried before giving up
DEFAULT_KEEP_BUNDLES = 3  # windows whose bundle bytes stay in the journal (a restart needs only the current one)


@dataclass
class WindowRecord:
    window: int
    stage: str  # "built" | "uploaded" | "committed" | "missed"
    bundle_hash: str = ""
    location: str = ""
    n_groups: int = 0
    n_tokens: int = 0
    detail: str = ""


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
                 beacon_cache: BeaconCache | None = None, keep_bundles: int = DEFAULT_KEEP_BUNDLES):
        if n_groups < 1:
            raise ConfigError("a miner publishes at least one group per window")
        if keep_bundles < 1:
            raise ConfigError("keep_bundles must be at least 1 (the current window's bundle)")
        self.chain = chain
        self.keypair = keypair
        self.hotkey = keypair.ss58_address
        self.lm = lm
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
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, groups)

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
        if self.chain.current_block() >= deadline:
            return self._missed(window, rec, "the window's commitment deadline has passed")

        path = self.state.bundle_path(window)
        if rec is not None and path.is_file():
            data = path.read_bytes()
            log.info("window %d: resuming with the bundle built before the restart", window)
        else:
            ctx = window_context(self.chain, self.beacons, window, self.beacon_cache)
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

        if self.chain.current_block() >= deadline:
            return self._missed(window, rec, "generation finished after the commitment deadline")
        try:
            self.chain.commit(self.keypair, window,
                              encode_commitment(window, bytes.fromhex(rec.bundle_hash), rec.location))
        except ChainError:
            if self.chain.commitment_of(self.hotkey, window) is None:
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

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, max_windows: int | None = None,
            on_window: Callable[[WindowRecord], None] | None = None,
            on_tokens_factory: Callable[[int], Callable[[int], None] | None] | None = None) -> list[WindowRecord]:
        done: list[WindowRecord] = []
        failures = 0
        while not stop.is_set():
            window = window_of_block(self.chain.current_block())
            on_tokens = on_tokens_factory(window) if on_tokens_factory else None
            try:
                rec = self.run_window(window, on_tokens)
                failures = 0
            except (BeaconUnavailableError, StorageError, ChainError) as exc:
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise
                log.warning("window %d: %s; retrying at the next block (%d/%d)", window, exc, failures,
                            MAX_CONSECUTIVE_FAILURES)
                if self.chain.wait_for_block(self.chain.current_block() + 1, stop) is None:
                    break
                continue
            done.append(rec)
            self.state.prune_bundles(window + 1 - self.keep_bundles)
            if on_window:
                on_window(rec)
            if max_windows is not None and len(done) >= max_windows:
                break
            if self.chain.wait_for_block(window_start_block(window + 1), stop) is None:
                break
        return done
