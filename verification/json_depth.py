"""Nesting depth of a JSON text, measured without recursion.

Python's json parser recurses once per nested array/object; a body such as b"[" * 10**6 exhausts
the recursion limit (RecursionError) or, where a library raised that limit, overflows the C stack
and kills the process. Every parser of untrusted JSON here (bundles, drand relay responses) checks
the depth first."""

from __future__ import annotations

import json
import re

import numpy as np

# a JSON string: quote, then (non-quote non-backslash runs | backslash + any byte), then quote;
# possessive so that a 64 MiB run costs linear time and no backtracking memory
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_DEPTH_CHUNK = 1 << 22


def nesting_depth(body: bytes) -> int:
    """The deepest array/object nesting of a JSON text, ignoring brackets inside strings, computed
    without recursion. It never counts less than the json module would recurse (strings end at
    the same unescaped quote), so a body under the limit cannot overflow the parser's stack."""
    structure = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, structure.size, _DEPTH_CHUNK):  # chunks bound the memory to a few MiB
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
