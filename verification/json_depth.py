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
    objects: int  # "{"
    arrays: int  # "["
    keys: int  # ":"
    commas: int  # ","
    strings: int  # string literals (keys included)
    long_number: bool  # a run of number characters outside strings longer than the scan's limit


def scan_json(body: bytes, max_number_chars: int = 20) -> JsonShape:
    """One linear pass over a JSON text (strings collapsed to "" first, as nesting_depth does):
    its depth and the counts a schema can bound before the parser builds anything. Memory: the
    collapsed text (at most the body's size) and a few MiB of chunks."""
    structure = _JSON_STRING.sub(b'""', body)
    long_number = re.search(rb"[-+.0-9eE]{%d}" % (max_number_chars + 1), structure) is not None
    return JsonShape(depth=_depth_of_structure(structure), objects=structure.count(b"{"),
                     arrays=structure.count(b"["), keys=structure.count(b":"), commas=structure.count(b","),
                     strings=structure.count(b'"') // 2, long_number=long_number)


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
