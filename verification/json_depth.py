"""Nesting depth of a JSON text, measured without recursion.

Python's json parser recurses once per nested array/object; a body such as b"[" * 10**6 exhausts
the recursion limit (RecursionError) or, where a library raised that limit, overflows the C stack
and kills the process. Every parser of untrusted JSON here (bundles, drand relay responses) checks
the depth first."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

# a JSON string: quote, then (non-quote non-backslash runs | backslash + any byte), then quote;
# possessive so that a 64 MiB run costs linear time and no backtracking memory
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_DEPTH_CHUNK = 1 << 16  # 64 KiB of text: ~1 MiB of numpy temporaries, whatever the body's size


def nesting_depth(body: bytes) -> int:
    """The deepest array/object nesting of a JSON text, ignoring brackets inside strings, computed
    without recursion. It never counts less than the json module would recurse (strings end at
    the same unescaped quote), so a body under the limit cannot overflow the parser's stack."""
    return _depth_of_structure(_JSON_STRING.sub(b'""', body))


@dataclass(frozen=True)
class JsonShape:
    """How much structure a JSON text holds, counted without parsing it: what json.loads would
    allocate is about one Python object per container, key and value, plus the strings' bytes."""

    depth: int
    objects: int  # "{" outside strings
    arrays: int  # "[" outside strings
    keys: int  # ":" outside strings
    commas: int  # "," outside strings
    strings: int  # string literals (keys included)
    long_number: bool  # a run of number characters outside strings longer than the scan's limit


_SCAN_CHUNK = 1 << 16
_NUMBER_CHARS = np.zeros(256, dtype=bool)
_NUMBER_CHARS[np.frombuffer(b"-+.0123456789eE", dtype=np.uint8)] = True


def _run_lengths(flags: np.ndarray, carry: int) -> np.ndarray:
    """For each position, how many consecutive True flags end there (carry: the run before it)."""
    idx = np.arange(1, flags.size + 1, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(flags, 0, idx))
    runs = idx - last_false
    # a run that reaches back to the chunk's start continues the previous chunk's run
    return np.where(last_false == 0, runs + carry, runs)


def scan_json(body: bytes, max_number_chars: int = 20) -> JsonShape:
    """One linear, vectorized pass over a JSON text, in chunks of 64 KiB (a few MiB of
    temporaries whatever the text's size, and no Python object per token): its depth and the
    counts a schema can bound before the parser builds anything. A quote opens or closes a string
    unless an odd run of backslashes precedes it, as in the parser, so brackets inside strings are
    not counted (up to the first byte the parser would refuse, it sees the same strings)."""
    data = np.frombuffer(body, dtype=np.uint8)
    depth = deepest = 0
    inside = False  # within a string at the chunk's start
    backslashes = number_run = 0  # runs carried over from the previous chunk
    objects = arrays = keys = commas = quotes = 0
    long_number = False
    for start in range(0, data.size, _SCAN_CHUNK):
        chunk = data[start:start + _SCAN_CHUNK]
        slash = chunk == ord("\\")
        slash_runs = _run_lengths(slash, backslashes)
        before = np.empty_like(slash_runs)  # backslashes right before each byte
        before[0] = backslashes
        before[1:] = slash_runs[:-1]
        quote = (chunk == ord('"')) & (before % 2 == 0)
        # inside a string: an odd number of unescaped quotes at or before the byte (the closing
        # quote itself counts as inside, the opening one as well: neither is structure)
        parity = (np.cumsum(quote, dtype=np.int64) + int(inside)) % 2 == 1
        outside = ~(parity | quote)
        opened = outside & ((chunk == ord("[")) | (chunk == ord("{")))
        closed = outside & ((chunk == ord("]")) | (chunk == ord("}")))
        running = np.cumsum(opened.astype(np.int32) - closed.astype(np.int32), dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
        objects += int(np.count_nonzero(outside & (chunk == ord("{"))))
        arrays += int(np.count_nonzero(outside & (chunk == ord("["))))
        keys += int(np.count_nonzero(outside & (chunk == ord(":"))))
        commas += int(np.count_nonzero(outside & (chunk == ord(","))))
        quotes += int(np.count_nonzero(quote))
        number_runs = _run_lengths(outside & _NUMBER_CHARS[chunk], number_run)
        long_number = long_number or int(number_runs.max()) > max_number_chars
        inside = bool(parity[-1])
        backslashes = int(slash_runs[-1])
        number_run = int(number_runs[-1])
    return JsonShape(depth=deepest, objects=objects, arrays=arrays, keys=keys, commas=commas,
                     strings=quotes // 2, long_number=long_number)


def _depth_of_structure(collapsed: bytes) -> int:
    structure = np.frombuffer(collapsed, dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, structure.size, _DEPTH_CHUNK):  # chunks bound the memory
        chunk = structure[start:start + _DEPTH_CHUNK]
        step = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int32)
        step -= ((chunk == ord("]")) | (chunk == ord("}"))).astype(np.int32)
        running = np.cumsum(step, dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def loads_bounded(raw: bytes, max_depth: int, **kw):
    """json.loads after a depth check; ValueError when the text nests deeper than max_depth."""
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise ValueError(f"JSON nests {depth} deep (limit {max_depth})")
    return json.loads(raw, **kw)
