"""Checkpoint announcements from one hotkey's subtensor commitments (docs/protocol.md section 15).

Subtensor keeps a hotkey's latest commitment per netuid, with the block it landed in. Earlier ones
are in the state of earlier blocks: the commitment in force before the one that landed in block b
is the commitment in the state of block b - 1. AnnouncementHistory walks that chain back from a
block's state, through a reader `read(hotkey, block) -> (landed_block, bytes) | None`, and keeps
what it walked (state at finalized blocks never changes; callers pass finalized blocks only).

A node that prunes state (subtensor's default keeps the last 256 blocks) can answer for blocks
that recent only; walking further back (auditing old windows, or an announcer with a long run of
commitments that are not valid announcements) needs an archive node."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from verification.announcement import announcement_state_block, decode_announcement, valid_on_subtensor
from verification.checkpoint import Announcement
from verification.errors import ChainError, CheckpointError

Record = tuple[int, bytes]  # (the block the commitment landed in, its bytes)
# Most commitments one derivation reads. Within one usage interval the announcer can land at most
# 31 commitments (3100 / 100 bytes); past this many without a valid announcement the chain is not
# being used as the protocol says, and the window is skipped (CheckpointError) rather than walked
# to genesis.
MAX_ANNOUNCEMENT_WALK = 64


class AnnouncementHistory:
    def __init__(self, netuid: int, read: Callable[[str, int], Record | None], *,
                 max_walk: int = MAX_ANNOUNCEMENT_WALK):
        self.netuid = netuid
        self._read = read
        self.max_walk = max_walk
        self._before: dict[tuple[str, int], Record | None] = {}  # (hotkey, landed) -> the commitment before it
        self.reads = 0  # chain reads made (tests and logs)

    def _read_at(self, hotkey: str, block: int) -> Record | None:
        self.reads += 1
        return self._read(hotkey, block)

    def records(self, hotkey: str, at_block: int) -> Iterator[Record]:
        """The hotkey's commitments in the state of at_block and before, newest first."""
        record = self._read_at(hotkey, at_block)
        walked = 0
        while record is not None:
            landed = record[0]
            if landed > at_block:
                raise ChainError(f"the commitment of {hotkey} read at block {at_block} landed in block {landed}")
            walked += 1
            if walked > self.max_walk:
                raise CheckpointError(f"more than {self.max_walk} commitments of the announcer {hotkey} before block "
                                      f"{at_block} without a valid checkpoint announcement")
            yield record
            key = (hotkey, landed)
            if key not in self._before:
                self._before[key] = self._read_at(hotkey, landed - 1) if landed > 0 else None
            at_block, record = landed - 1, self._before[key]

    def valid(self, record: Record) -> Announcement | None:
        """The announcement a commitment carries, if it is one and valid on subtensor."""
        landed, data = record
        try:
            c = decode_announcement(self.netuid, data)
            if not valid_on_subtensor(c.from_window, landed):
                return None
            return c.at_block(landed)
        except CheckpointError:
            return None

    def candidates(self, hotkey: str, window: int) -> Iterator[Announcement]:
        """The valid announcements in the state of announcement_state_block(window), newest first:
        the first one whose checkpoint is not invalid is in force (docs/protocol.md section 15);
        none: the base model. Lazy: each further one costs chain reads only when asked for."""
        at = announcement_state_block(window)
        if at is None:
            return
        for record in self.records(hotkey, at):
            ann = self.valid(record)
            if ann is not None:
                yield ann

    def in_force(self, hotkey: str, window: int) -> Announcement | None:
        """The newest valid announcement in the state of announcement_state_block(window) (in force
        unless its checkpoint is invalid). None: the base model."""
        return next(self.candidates(hotkey, window), None)

    def recent(self, hotkey: str, head: int, since_block: int) -> list[Announcement]:
        """Every valid announcement that landed after since_block (up to head), and the newest one
        that landed at or before it, oldest first. checkpoint_for(w, recent(...)) equals
        in_force(w) for every window w with announcement_state_block(w) >= since_block, since on
        subtensor from_window grows with the landing block."""
        out: list[Announcement] = []
        for record in self.records(hotkey, head):
            ann = self.valid(record)
            if ann is not None:
                out.append(ann)
                if record[0] <= since_block:
                    break
        return out[::-1]
