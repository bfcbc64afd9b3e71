"""What a bundle can cost: the largest file an honest miner can build under a window's generation
params, and the most JSON values of each kind the bundle schema allows (docs/protocol.md section 9).

A bundle's size is fixed by its layout (section 9: canonical JSON, every array base64):

    max_bundle_bytes(group_size S, max_new_tokens T, n_groups G) =
        len(BUNDLE_MAGIC) + frame + header(S, T, G) + G x group(G) + G x S x rollout(S, T) + (G - 1)

- frame: `{"groups":[],"header":,"signature":"<128 hex>"}`;
- header(S, T, G): the canonical header with every field at its longest (a 64-character hotkey,
  192-hex beacon signatures, 19-digit integers);
- group(G): `{"environment":"<MAX_ENV_NAME_LEN>","index":<digits of G-1>,"prompt":"<b64 of
  4 x MAX_PROMPT_TOKENS bytes>","rollouts":[]}` plus the S - 1 commas between its rollouts;
- rollout(S, T): `{"advantage":<20>,"completion":"<b64(4T)>","index":<digits of S-1>,"logprobs":
  "<b64(4T)>","reward":<13>,"sketches":"<b64(2 x SKETCH_DIM x T)>"}`, where b64(n) = 4 ceil(n / 3):
  about 16 x 4/3 = 21.3 bytes per completion token.

Every honest bundle fits: its strings are hex, base64, an SS58 hotkey and a registered environment
name (ASCII, never escaped), its integers lie in the schema's ranges, and a prompt is at most
MAX_PROMPT_TOKENS tokens. The bound is tight for long generations (a bundle whose prompts and
completions are all at their maxima is >= 0.97 of it, tests/test_bundle_size.py); for the base
params (S = 8, T = 24) the longest-prompt allowance (2,732 bytes a group) is most of the slack.

The shape limits bound what parsing can allocate: a body with more objects, arrays, keys, values or
longer numbers than the schema allows for G groups of S rollouts is refused by a linear scan
(verification.json_depth.scan_json) before the JSON parser builds a single Python object."""

from __future__ import annotations

import math
from dataclasses import dataclass

from verification.canonical import canonical_json
from verification.constants import (
    BUNDLE_MAGIC,
    MAX_GROUP_SIZE,
    MAX_GROUPS_PER_BUNDLE,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    PROTOCOL_VERSION,
    SKETCH_DIM,
)

# longest string values the schema (verification.bundle) allows for these fields
MAX_HOTKEY_LEN = 64
MAX_ENV_NAME_LEN = 32
MAX_BEACON_SIGNATURE_HEX = 192
# longest integer literal in a bundle: -(2**62) (advantage) has 20 characters, 2**63 - 1 has 19
MAX_NUMBER_CHARS = 20
_MAX_REWARD = 10**12
_MAX_ADVANTAGE_TEXT = str(-(2**62))
_MAX_I63 = 2**63 - 1

# keys of each object of the schema
_TOP_KEYS, _HEADER_KEYS, _BEACON_KEYS, _GROUP_KEYS, _ROLLOUT_KEYS = 3, 12, 4, 4, 6
# string values of each object (the rest are integers, objects or arrays)
_TOP_STRINGS, _HEADER_STRINGS, _BEACON_STRINGS, _GROUP_STRINGS, _ROLLOUT_STRINGS = 1, 4, 3, 2, 3


def b64_len(n_bytes: int) -> int:
    """Length of the standard, padded base64 text of n_bytes bytes."""
    return 4 * math.ceil(n_bytes / 3)


def _digits(n: int) -> int:
    return len(str(max(n, 0)))


def _check(group_size: int, max_new_tokens: int, n_groups: int) -> None:
    for name, v, hi in (("group_size", group_size, MAX_GROUP_SIZE), ("max_new_tokens", max_new_tokens, MAX_NEW_TOKENS),
                        ("n_groups", n_groups, MAX_GROUPS_PER_BUNDLE)):
        if not isinstance(v, int) or isinstance(v, bool) or not (0 if name == "n_groups" else 1) <= v <= hi:
            raise ValueError(f"{name} must be an integer in range, got {v!r}")


def header_bytes(group_size: int, max_new_tokens: int, n_groups: int) -> int:
    """Length of the longest canonical header with these params."""
    longest = {
        "protocol_version": PROTOCOL_VERSION,
        "netuid": 65535, "window": _MAX_I63, "block_hash": "0" * 64, "block_time": _MAX_I63,
        "hotkey": "x" * MAX_HOTKEY_LEN,
        "beacon": {"chain_hash": "0" * 64, "round": _MAX_I63, "signature": "0" * MAX_BEACON_SIGNATURE_HEX,
                   "previous_signature": "0" * MAX_BEACON_SIGNATURE_HEX},
        "model_fingerprint": "0" * 64, "group_size": group_size, "max_new_tokens": max_new_tokens,
        "n_groups": n_groups, "rows_root": "0" * 64,
    }
    return len(canonical_json(longest))


def rollout_bytes(group_size: int, max_new_tokens: int) -> int:
    """Length of the longest canonical rollout object (no separator)."""
    empty = len(canonical_json({"advantage": 0, "completion": "", "index": 0, "logprobs": "", "reward": 0,
                                "sketches": ""}))
    t = max_new_tokens
    return (empty - 3 + len(_MAX_ADVANTAGE_TEXT) + _digits(group_size - 1) + _digits(_MAX_REWARD)
            + 2 * b64_len(4 * t) + b64_len(2 * SKETCH_DIM * t))


def group_bytes(group_size: int, n_groups: int) -> int:
    """Length of the longest canonical group object without its rollouts, plus their separators."""
    empty = len(canonical_json({"environment": "", "index": 0, "prompt": "", "rollouts": []}))
    return (empty - 1 + _digits(n_groups - 1) + MAX_ENV_NAME_LEN + b64_len(4 * MAX_PROMPT_TOKENS)
            + (group_size - 1))


def max_bundle_bytes(group_size: int, max_new_tokens: int, n_groups: int = MAX_GROUPS_PER_BUNDLE) -> int:
    """The largest bundle file an honest miner can build with n_groups groups of group_size
    rollouts of at most max_new_tokens tokens (the formula in this module's docstring)."""
    _check(group_size, max_new_tokens, n_groups)
    frame = len(canonical_json({"groups": [], "header": 0, "signature": "0" * 128})) - 1
    return (len(BUNDLE_MAGIC) + frame + header_bytes(group_size, max_new_tokens, n_groups)
            + n_groups * (group_bytes(group_size, n_groups) + group_size * rollout_bytes(group_size, max_new_tokens))
            + max(n_groups - 1, 0))


def bundle_limit(generation, n_groups: int | None = None) -> int:
    """max_bundle_bytes for a window's generation params (verification.generation.GenerationParams:
    group_size, max_new_tokens and groups, the number of groups every bundle of the window holds).
    `n_groups` overrides the params' groups (anything without a `groups` field: at most
    MAX_GROUPS_PER_BUNDLE)."""
    if n_groups is None:
        n_groups = getattr(generation, "groups", MAX_GROUPS_PER_BUNDLE)
    return max_bundle_bytes(generation.group_size, generation.max_new_tokens, n_groups)


@dataclass(frozen=True)
class ShapeLimits:
    """The most JSON structure a bundle body of at most n_groups groups of at most group_size
    rollouts can hold (exact counts of the schema's objects, arrays, keys and values)."""

    objects: int
    arrays: int
    keys: int
    commas: int
    strings: int
    number_chars: int = MAX_NUMBER_CHARS


def shape_limits(group_size: int = MAX_GROUP_SIZE, n_groups: int = MAX_GROUPS_PER_BUNDLE) -> ShapeLimits:
    g, s = n_groups, group_size
    rollouts = g * s
    keys = _TOP_KEYS + _HEADER_KEYS + _BEACON_KEYS + g * _GROUP_KEYS + rollouts * _ROLLOUT_KEYS
    # commas: between an object's members (keys - 1 per object) and between array elements
    commas = ((_TOP_KEYS - 1) + (_HEADER_KEYS - 1) + (_BEACON_KEYS - 1) + g * (_GROUP_KEYS - 1)
              + rollouts * (_ROLLOUT_KEYS - 1) + max(g - 1, 0) + g * max(s - 1, 0))
    strings = (keys + _TOP_STRINGS + _HEADER_STRINGS + _BEACON_STRINGS + g * _GROUP_STRINGS
               + rollouts * _ROLLOUT_STRINGS)
    return ShapeLimits(objects=3 + g + rollouts, arrays=1 + g, keys=keys, commas=commas, strings=strings)
