"""Canonical JSON: the one byte encoding of every structured value the protocol hashes or signs
(bundle documents, signed headers, generation parameters, checkpoint manifests, window reports).

canonical_json(v) = UTF-8 of json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False). Protocol values are integers, strings, booleans, lists and objects; reports that
carry floats (display-only scores) use the same function, and Python's shortest round-trip float
repr fixes their bytes too."""

from __future__ import annotations

import json


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
