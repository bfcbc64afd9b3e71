"""What a window publicly fixes before any miner starts: the chain's block and the pinned beacon."""

from __future__ import annotations

from dataclasses import dataclass

from verification.challenge import problem_seed, sketch_key, window_seed
from verification.drand import Beacon


@dataclass(frozen=True)
class WindowContext:
    netuid: int
    window: int
    block_hash: bytes
    block_time: int
    beacon: Beacon  # the round pinned to the window start, already verified by whoever built this

    @property
    def seed(self) -> bytes:
        return window_seed(self.netuid, self.window, self.block_hash, self.beacon.randomness)

    @property
    def sketch_key(self) -> bytes:
        return sketch_key(self.seed)

    def problem_seed(self, hotkey: str, group_index: int) -> bytes:
        return problem_seed(self.seed, hotkey, group_index)
