"""What a miner writes on chain for a window: the window, SHA-256 of its bundle file and where to
fetch it. Byte layout (docs/protocol.md section 12):

    COMMITMENT_MAGIC (3) || u64be window (8) || sha256(bundle file) (32) || committed location (UTF-8)

The committed location is a URI (`file:///abs/path`, `s3://bucket/key`, `https://host/path`) in one
of two forms:
  * a base, ending in "/": the bundle is at base + bundle_name(window, hash), i.e.
    `<base><window>/<sha256 hex>.rpb`. This keeps a commitment within subtensor's budget
    (MAX_COMMITMENT_BYTES) whatever the object key's length;
  * a full location that does not end in "/": the bundle is there.
`Commitment.location` is always the full location. Each commitment has one encoding: a full
location that ends with its own bundle name is committed as its base (encode does this), and the
decoder refuses the long form, so decode(encode(c)) == c and encode(decode(b)) == b."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from verification.constants import BUNDLE_FILE_SUFFIX, COMMITMENT_MAGIC, MAX_COMMITMENT_BYTES, MAX_LOCATION_BYTES
from verification.errors import CommitmentFormatError

COMMITMENT_HEAD_BYTES = len(COMMITMENT_MAGIC) + 8 + 32
# the longest base (with its trailing "/") whose commitment fits MAX_COMMITMENT_BYTES
MAX_BASE_BYTES = MAX_COMMITMENT_BYTES - COMMITMENT_HEAD_BYTES
LOCATION_SCHEMES = ("file://", "s3://", "https://", "http://")


def bundle_name(window: int, bundle_hash: bytes) -> str:
    """The bundle's object name under a committed base (and the key a miner stores it under)."""
    return f"{int(window)}/{bytes(bundle_hash).hex()}{BUNDLE_FILE_SUFFIX}"


@dataclass(frozen=True)
class Commitment:
    window: int
    bundle_hash: bytes
    location: str  # where the bundle is (a committed base is already completed)

    def encode(self) -> bytes:
        return encode_commitment(self.window, self.bundle_hash, self.location)


def check_location(location: str, max_bytes: int, error: type[Exception] = CommitmentFormatError,
                   what: str = "committed location") -> bytes:
    """The UTF-8 bytes of a location a commitment carries: 1..max_bytes bytes of a file://, s3:// or
    http(s):// URI with no whitespace or control characters; `error` otherwise."""
    raw = location.encode("utf-8")
    if not 1 <= len(raw) <= max_bytes:
        raise error(f"{what} must be 1..{max_bytes} bytes, got {len(raw)}")
    if not location.startswith(LOCATION_SCHEMES):
        raise error(f"{what} {location[:40]!r} is not a file://, s3:// or http(s):// URI")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in location):
        raise error(f"{what} contains whitespace or control characters")
    return raw


def _check_location(location: str) -> bytes:
    return check_location(location, MAX_LOCATION_BYTES)


def committed_location(window: int, bundle_hash: bytes, location: str) -> str:
    """The string a commitment carries for `location`: its base when it ends with the bundle's
    canonical name, the location itself otherwise."""
    name = "/" + bundle_name(window, bundle_hash)
    if location.endswith(name):
        return location[:-len(name) + 1]
    if location.endswith("/"):
        raise CommitmentFormatError(f"location {location[:40]!r}… ends in '/' but is not a bundle's base")
    return location


def encode_commitment(window: int, bundle_hash: bytes, location: str) -> bytes:
    if not 0 <= window < 2**64:
        raise CommitmentFormatError("window out of range")
    if len(bundle_hash) != 32:
        raise CommitmentFormatError("bundle hash must be 32 bytes")
    committed = _check_location(committed_location(window, bundle_hash, location))
    return COMMITMENT_MAGIC + struct.pack(">Q", window) + bytes(bundle_hash) + committed


def decode_commitment(data: bytes) -> Commitment:
    data = bytes(data)
    if len(data) <= COMMITMENT_HEAD_BYTES or not data.startswith(COMMITMENT_MAGIC):
        raise CommitmentFormatError("not a rollproof commitment")
    (window,) = struct.unpack(">Q", data[len(COMMITMENT_MAGIC):len(COMMITMENT_MAGIC) + 8])
    bundle_hash = data[len(COMMITMENT_MAGIC) + 8:COMMITMENT_HEAD_BYTES]
    try:
        committed = data[COMMITMENT_HEAD_BYTES:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommitmentFormatError("location is not UTF-8") from exc
    _check_location(committed)
    name = bundle_name(window, bundle_hash)
    if committed.endswith("/"):
        return Commitment(window, bundle_hash, committed + name)
    if committed.endswith("/" + name):
        raise CommitmentFormatError("a location ending with its bundle's name must be committed as its base")
    return Commitment(window, bundle_hash, committed)
