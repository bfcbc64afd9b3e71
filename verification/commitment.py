"""What a miner writes on chain for a window: the window, SHA-256 of its bundle file and where to
fetch it. Byte layout (docs/protocol.md section 12):

    COMMITMENT_MAGIC (3) || u64be window (8) || sha256(bundle file) (32) || location (UTF-8)

location is a URI: `file:///abs/path`, `s3://bucket/key` or `https://host/path`."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from verification.constants import COMMITMENT_MAGIC, MAX_LOCATION_BYTES
from verification.errors import CommitmentFormatError

_HEAD = len(COMMITMENT_MAGIC) + 8 + 32
LOCATION_SCHEMES = ("file://", "s3://", "https://", "http://")


@dataclass(frozen=True)
class Commitment:
    window: int
    bundle_hash: bytes
    location: str

    def encode(self) -> bytes:
        return encode_commitment(self.window, self.bundle_hash, self.location)


def _check_location(location: str) -> bytes:
    raw = location.encode("utf-8")
    if not 1 <= len(raw) <= MAX_LOCATION_BYTES:
        raise CommitmentFormatError(f"location must be 1..{MAX_LOCATION_BYTES} bytes, got {len(raw)}")
    if not location.startswith(LOCATION_SCHEMES):
        raise CommitmentFormatError(f"location {location[:40]!r} is not a file://, s3:// or http(s):// URI")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in location):
        raise CommitmentFormatError("location contains whitespace or control characters")
    return raw


def encode_commitment(window: int, bundle_hash: bytes, location: str) -> bytes:
    if not 0 <= window < 2**64:
        raise CommitmentFormatError("window out of range")
    if len(bundle_hash) != 32:
        raise CommitmentFormatError("bundle hash must be 32 bytes")
    return COMMITMENT_MAGIC + struct.pack(">Q", window) + bytes(bundle_hash) + _check_location(location)


def decode_commitment(data: bytes) -> Commitment:
    data = bytes(data)
    if len(data) <= _HEAD or not data.startswith(COMMITMENT_MAGIC):
        raise CommitmentFormatError("not a rollproof commitment")
    (window,) = struct.unpack(">Q", data[len(COMMITMENT_MAGIC):len(COMMITMENT_MAGIC) + 8])
    bundle_hash = data[len(COMMITMENT_MAGIC) + 8:_HEAD]
    try:
        location = data[_HEAD:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommitmentFormatError("location is not UTF-8") from exc
    _check_location(location)
    return Commitment(window, bundle_hash, location)
