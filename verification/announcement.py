"""Checkpoint announcements carried by a subtensor hotkey commitment (docs/protocol.md section 15),
for subnets without the EVM registry. Pure: no chain access.

Byte layout (one commitment of the announcer's hotkey, split into Raw fields by the adapter):

    ANNOUNCEMENT_MAGIC (3) || u64be from_window (8) || fingerprint (32) || sha256(manifest) (32)
    || committed location (UTF-8)

The committed location is the manifest's URI in one of two forms, as for bundle commitments
(verification/commitment.py):
  * a base ending in "/": the manifest is at base + checkpoint_manifest_name(netuid, fingerprint),
    i.e. `<base>rollproof/<netuid>/checkpoints/<fingerprint hex>/manifest.json`, the key a trainer's
    store writes it under; this keeps an announcement short whatever the key's length;
  * a full URI that does not end in "/": the manifest is there.
A location ending with its own manifest name is committed as its base (the name alone is longer
than any committed location), so each announcement has one encoding.

Size (the Commitments pallet: max(bytes, 100) charged per set_commitment against MaxSpace = 3100
bytes per hotkey per usage interval of tempo + 1 blocks, 361 on finney; Raw fields of at most
128 bytes, at most 3 of them): 75 fixed bytes + a base of at most MAX_ANNOUNCEMENT_BASE_BYTES (75)
makes at most MAX_ANNOUNCEMENT_BYTES = 150, two Raw fields. An interval holds at most 19 window
starts (ceil(361 / 20)); announcing in every one of them costs 19 x 150 = 2850 of 3100 bytes, and
the 250 left take one more full announcement (a re-announcement after one landed too late).

The rule (subtensor keeps only a hotkey's latest commitment, with the block it landed in):
  * an announcement that landed in block b is valid iff from_window == window_of_block(b) +
    ACTIVATION_WINDOWS exactly (the EVM registry also takes a later from_window, up to
    MAX_ANNOUNCE_AHEAD_WINDOWS; here equality makes from_window grow with the landing block, so the
    newest valid announcement comes first, and keeps every valid announcement within that bound:
    one naming a later window, 2**64 - 1 included, is never valid);
  * the checkpoint in force for window w is the announcer's latest valid announcement that landed at
    or before block announcement_state_block(w), the last block of window w - ACTIVATION_WINDOWS:
    the announcer's commitment in that block's state, and, while that is not a valid announcement
    (another payload, a late landing), the commitment in the state of the block before the one it
    landed in, and so on. No commitment at all: the base model. The valid announcements met on
    that walk are the window's candidates: one whose checkpoint is invalid (a check on the bytes it
    binds fails) is void and the next one is in force (docs/protocol.md section 15). There is no
    void here: the announcer supersedes an announcement with its next one."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from verification.challenge import window_deadline_block, window_of_block
from verification.checkpoint import Announcement
from verification.constants import (
    ACTIVATION_WINDOWS,
    ANNOUNCEMENT_MAGIC,
    MAX_ANNOUNCEMENT_BYTES,
    MAX_CHECKPOINT_LOCATION_BYTES,
)
from verification.commitment import check_location
from verification.errors import CheckpointError

ANNOUNCEMENT_HEAD_BYTES = len(ANNOUNCEMENT_MAGIC) + 8 + 32 + 32
MAX_ANNOUNCEMENT_BASE_BYTES = MAX_ANNOUNCEMENT_BYTES - ANNOUNCEMENT_HEAD_BYTES
MANIFEST_NAME = "manifest.json"


def checkpoint_manifest_name(netuid: int, fingerprint: bytes) -> str:
    """The manifest's key under a store root (and under a committed base)."""
    return f"rollproof/{int(netuid)}/checkpoints/{bytes(fingerprint).hex()}/{MANIFEST_NAME}"


def announcement_state_block(window: int) -> int | None:
    """The block whose state holds the announcement in force for `window`: the last block of window
    - ACTIVATION_WINDOWS. None: the window is too early for any announcement (the base model)."""
    if window < ACTIVATION_WINDOWS:
        return None
    return window_deadline_block(window - ACTIVATION_WINDOWS) - 1


def valid_on_subtensor(from_window: int, landed_block: int) -> bool:
    return from_window == window_of_block(landed_block) + ACTIVATION_WINDOWS


@dataclass(frozen=True)
class AnnouncementCommitment:
    from_window: int
    fingerprint: bytes
    manifest_hash: bytes
    location: str  # the manifest's full URI (a committed base already completed)

    def at_block(self, block: int) -> Announcement:
        return Announcement(self.from_window, self.fingerprint, self.manifest_hash, self.location, block)


def _check_location(location: str) -> bytes:
    return check_location(location, MAX_ANNOUNCEMENT_BASE_BYTES, CheckpointError,
                          "an announced location (a base, or a short full URI)")


def committed_location(netuid: int, fingerprint: bytes, location: str) -> str:
    """What an announcement carries for the manifest `location`: its base when it ends with the
    manifest's canonical name, the location itself otherwise."""
    name = "/" + checkpoint_manifest_name(netuid, fingerprint)
    if location.endswith(name):
        return location[:-len(name) + 1]
    if location.endswith("/"):
        raise CheckpointError(f"location {location[:40]!r}… ends in '/' but is not a checkpoint's base")
    return location


def encode_announcement(netuid: int, from_window: int, fingerprint: bytes, manifest_hash: bytes,
                        location: str) -> bytes:
    if not 0 <= from_window < 2**64:
        raise CheckpointError("announcement from_window out of range")
    if len(fingerprint) != 32 or len(manifest_hash) != 32:
        raise CheckpointError("announcement fingerprint and manifest hash are 32 bytes")
    if len(location.encode("utf-8")) > MAX_CHECKPOINT_LOCATION_BYTES:
        raise CheckpointError(f"checkpoint location is over {MAX_CHECKPOINT_LOCATION_BYTES} bytes")
    committed = _check_location(committed_location(netuid, fingerprint, location))
    return ANNOUNCEMENT_MAGIC + struct.pack(">Q", from_window) + bytes(fingerprint) + bytes(manifest_hash) + committed


def decode_announcement(netuid: int, data: bytes) -> AnnouncementCommitment:
    """Raises CheckpointError for anything but an announcement in its one encoding."""
    data = bytes(data)
    if len(data) <= ANNOUNCEMENT_HEAD_BYTES or not data.startswith(ANNOUNCEMENT_MAGIC):
        raise CheckpointError("not a rollproof checkpoint announcement")
    if len(data) > MAX_ANNOUNCEMENT_BYTES:
        raise CheckpointError(f"announcement is {len(data)} bytes, over {MAX_ANNOUNCEMENT_BYTES}")
    at = len(ANNOUNCEMENT_MAGIC)
    (from_window,) = struct.unpack(">Q", data[at:at + 8])
    fingerprint, manifest_hash = data[at + 8:at + 40], data[at + 40:ANNOUNCEMENT_HEAD_BYTES]
    try:
        committed = data[ANNOUNCEMENT_HEAD_BYTES:].decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("announced location is not UTF-8") from None
    _check_location(committed)
    if committed.endswith("/"):
        return AnnouncementCommitment(from_window, fingerprint, manifest_hash,
                                      committed + checkpoint_manifest_name(netuid, fingerprint))
    # a full location cannot end with its manifest's name: the name alone (over 100 bytes) is longer
    # than any committed location, so this encoding is the only one
    return AnnouncementCommitment(from_window, fingerprint, manifest_hash, committed)
