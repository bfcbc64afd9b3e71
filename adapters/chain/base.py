"""The chain interface miner and validator use. Every method raises ChainError (typed, with the
endpoint and the cause) when the chain cannot be reached or refuses the call, and its subclass
ChainRefusedError where the adapter can tell that the refusal is permanent (not registered, no
permit, an EVM key that does not own the uid): nodes retry the first and stop on the second."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from verification.checkpoint import Announcement
from verification.errors import ChainError, ChainRefusedError


@dataclass(frozen=True)
class BlockInfo:
    number: int
    hash: bytes  # 32 bytes
    timestamp: int  # seconds


@dataclass(frozen=True)
class Neuron:
    uid: int
    hotkey: str  # ss58
    validator_permit: bool


@dataclass(frozen=True)
class CommitmentRecord:
    uid: int
    hotkey: str
    window: int
    block: int  # block the commitment landed in
    data: bytes


@dataclass(frozen=True)
class LedgerEntry:
    validator_uid: int
    window: int
    uids: tuple[int, ...]
    scores: tuple[int, ...]
    verified_root: bytes
    report_hash: bytes
    block: int


class Chain(ABC):
    netuid: int
    name: str = "chain"

    # ---- reading ------------------------------------------------------------------------------
    @abstractmethod
    def current_block(self) -> int: ...

    @abstractmethod
    def block(self, number: int) -> BlockInfo:
        """A produced block; ChainError if it does not exist yet."""

    @abstractmethod
    def neurons(self) -> list[Neuron]: ...

    def uid_of(self, hotkey: str) -> int | None:
        for n in self.neurons():
            if n.hotkey == hotkey:
                return n.uid
        return None

    def preflight(self, keypair, *, validator: bool = False) -> int:
        """The startup check a node runs before any work: will this chain take keypair's writes?
        Here: the hotkey is registered. Chains that can tell more check more (EVMChain: the EVM key
        owns the uid, a validator holds a permit; BittensorChain: the subnet exists, a validator
        holds a permit and the subnet's WeightsVersionKey is one this protocol can write).
        Returns the uid; raises ChainRefusedError (permanent, one line saying what to do) or
        ChainError (the chain cannot be asked now)."""
        uid = self.uid_of(keypair.ss58_address)
        if uid is None:
            raise ChainRefusedError(f"hotkey {keypair.ss58_address} is not registered on netuid {self.netuid} "
                                    f"({self.name}): register it first (`rollproof miner register`)")
        return uid

    @abstractmethod
    def commitments(self, window: int) -> list[CommitmentRecord]:
        """Every valid registered neuron's commitment that landed in window's blocks."""

    def commitment_of(self, hotkey: str, window: int) -> CommitmentRecord | None:
        for c in self.commitments(window):
            if c.hotkey == hotkey:
                return c
        return None

    @abstractmethod
    def weights_window(self, validator_uid: int) -> int | None:
        """The latest window the validator set weights for, or None."""

    def weights_ready(self, validator_uid: int) -> bool:
        """Whether the chain accepts the validator's weights now (False while a rate limit holds)."""
        return True

    @abstractmethod
    def weights(self, validator_uid: int) -> dict[int, int]:
        """The u16 weights the validator set most recently."""

    @abstractmethod
    def ledger_entry(self, validator_uid: int, window: int) -> LedgerEntry | None: ...

    # ---- writing ------------------------------------------------------------------------------
    @abstractmethod
    def register(self, keypair) -> int: ...

    @abstractmethod
    def commit(self, keypair, window: int, data: bytes) -> None: ...

    @abstractmethod
    def set_weights(self, keypair, window: int, uids: list[int], weights: list[int]) -> None:
        """Raises ChainRefusedError when the chain will never take them from this key (see
        preflight), ChainError for anything a retry may fix."""

    @abstractmethod
    def record_scores(self, keypair, window: int, uids: list[int], scores: list[int],
                      verified_root: bytes, report_hash: bytes) -> None: ...

    # ---- checkpoints (docs/protocol.md section 15) --------------------------------------------
    def checkpoint_announcements(self) -> list[Announcement]:
        """Every checkpoint announcement on chain, oldest first. A chain with no checkpoint registry
        has none: every window uses the base model."""
        return []

    def announcement_in_force(self, window: int) -> Announcement | None:
        """The checkpoint announcement in force for `window` (None: the base model): by default
        checkpoint_for over every announcement; chains that keep only recent announcements at hand
        (Bittensor's commitments) derive it from the chain state the rule names."""
        from verification.checkpoint import checkpoint_for

        return checkpoint_for(window, self.checkpoint_announcements())

    def announcement_candidates(self, window: int) -> Iterator[Announcement]:
        """The announcements that may be in force for `window`, best first (the first one that is
        not invalid is in force; none left: the base model, docs/protocol.md section 15): by default
        checkpoint_candidates over every announcement. Lazy, so a reader stops at the first valid."""
        from verification.checkpoint import checkpoint_candidates

        yield from checkpoint_candidates(window, self.checkpoint_announcements())

    def trainer_hotkey(self) -> str | None:
        """The ss58 hotkey whose signature a checkpoint manifest must carry (None: no trainer set)."""
        return None

    def announce_checkpoint(self, keypair, from_window: int, fingerprint: bytes, manifest_hash: bytes,
                            location: str) -> None:
        raise ChainError(f"{self.name} chains hold no checkpoint registry")

    def close(self) -> None:
        """Release connections (the Bittensor SDK's client thread); a no-op where there are none."""

    def identity(self) -> str:
        """A name for this chain instance (journals are kept per chain, so a fresh embedded chain
        never meets an old journal)."""
        return f"{self.name}-{self.netuid}-{self.block(0).hash.hex()[:12]}"

    # ---- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        """The chain's clock (used by a local drand so that simulated chains stay consistent)."""
        return time.time()

    def wait_for_block(self, number: int, stop: threading.Event | None = None, poll_s: float = 2.0) -> BlockInfo | None:
        """Block until `number` exists; None if `stop` was set first."""
        while True:
            if self.current_block() >= number:
                return self.block(number)
            if stop is not None and stop.wait(poll_s):
                return None
            if stop is None:
                time.sleep(poll_s)
