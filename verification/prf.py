"""Domain-separated pseudo-random functions.

Framing (docs/protocol.md section 2): a key is
    SHA-256( PRF_PREFIX || domain || 0x00 || part_1 || ... || part_n )
where each part is a one-byte type tag followed by a 4-byte big-endian length and the bytes:
    b"b": raw bytes, b"s": UTF-8 string, b"i": unsigned integer as 8-byte big-endian.
Streams of arbitrary length come from SHAKE-256 over the same framing, and unbounded streams of
64-bit words from SHA-256(key || u64be(block)).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Union

from verification.constants import PRF_PREFIX

Part = Union[bytes, str, int]


def _frame(domain: str, parts: tuple[Part, ...]) -> bytes:
    if not domain or "\x00" in domain:
        raise ValueError("domain must be a non-empty string without NUL")
    out = [PRF_PREFIX, domain.encode("ascii"), b"\x00"]
    for part in parts:
        if isinstance(part, bool):  # bool is an int subclass: refuse the ambiguity
            raise TypeError("bool is not a PRF part")
        if isinstance(part, (bytes, bytearray, memoryview)):
            tag, raw = b"b", bytes(part)
        elif isinstance(part, str):
            tag, raw = b"s", part.encode("utf-8")
        elif isinstance(part, int):
            if part < 0 or part >= 1 << 64:
                raise ValueError("integer PRF parts must be in [0, 2^64)")
            tag, raw = b"i", part.to_bytes(8, "big")
        else:
            raise TypeError(f"unsupported PRF part type {type(part).__name__}")
        out.append(tag + struct.pack(">I", len(raw)) + raw)
    return b"".join(out)


def prf(domain: str, *parts: Part) -> bytes:
    """32-byte keyed digest of the framed parts."""
    return hashlib.sha256(_frame(domain, parts)).digest()


def prf_bytes(n: int, domain: str, *parts: Part) -> bytes:
    """n bytes of SHAKE-256 output over the framed parts."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return hashlib.shake_256(_frame(domain, parts)).digest(n)


def word_stream(key: bytes) -> Iterator[int]:
    """Unbounded stream of u64 words: SHA-256(key || u64be(block)) split into 4 big-endian words."""
    block = 0
    while True:
        digest = hashlib.sha256(key + block.to_bytes(8, "big")).digest()
        yield from struct.unpack(">4Q", digest)
        block += 1


def uniform_below(words: Iterator[int], n: int) -> int:
    """Unbiased integer in [0, n) by rejection: draw w, reject w >= floor(2^64 / n) * n, return w % n."""
    if n <= 0:
        raise ValueError("n must be positive")
    limit = ((1 << 64) // n) * n
    for w in words:
        if w < limit:
            return w % n
    raise AssertionError("unreachable: word stream is infinite")


def sample_distinct(key: bytes, n: int, k: int) -> list[int]:
    """k distinct indices of range(n), in draw order: draw uniform_below(n) repeatedly, keep the first
    occurrence of each value, stop at k. k is clipped to n."""
    if n < 0 or k < 0:
        raise ValueError("n and k must be >= 0")
    k = min(k, n)
    words = word_stream(key)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < k:
        i = uniform_below(words, n)
        if i not in seen:
            seen.add(i)
            chosen.append(i)
    return chosen
