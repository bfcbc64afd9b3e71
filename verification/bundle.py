"""The rollout bundle: versioned schema, canonical bytes, row digests, signature, safe parsing.

Wire format (docs/protocol.md section 9):
    BUNDLE_MAGIC || canonical_json({"header": H, "signature": hex, "groups": [...]})
canonical_json = UTF-8 JSON, keys sorted, no whitespace, ASCII only; values are only integers,
strings and lists/objects of them (no floats anywhere: float data travels as base64 of
little-endian float32). Arrays: prompt/completion tokens uint32 LE, logprobs float32 LE,
sketches int16 LE row-major [C, SKETCH_DIM].

Each rollout row has a digest (row_digest) and the header's rows_root is the Merkle root of all
row digests in (group, rollout) order. The hotkey signs PRF("bundle-header", canonical_json(H)).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from verification.bundle_size import MAX_ENV_NAME_LEN, MAX_HOTKEY_LEN, MAX_NUMBER_CHARS, bundle_limit, shape_limits
from verification.constants import (
    BUNDLE_MAGIC,
    MAX_BUNDLE_BYTES,
    MAX_GROUP_SIZE,
    MAX_GROUPS_PER_BUNDLE,
    MAX_JSON_DEPTH,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    PROTOCOL_VERSION,
    SKETCH_DIM,
)
from verification.drand import Beacon
from verification.errors import BundleFormatError, BundleTooLargeError
from verification.json_depth import scan_json
from verification.merkle import merkle_root
from verification.canonical import canonical_json
from verification.prf import prf

_HEX = re.compile(r"^(?:[0-9a-f]{2})*$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _hex(value: str, n: int | None = None) -> str:
    if not _HEX.fullmatch(value) or (n is not None and len(value) != 2 * n):
        raise ValueError(f"expected {'%d bytes of ' % n if n else ''}lowercase hex")
    return value


class BeaconModel(_Strict):
    chain_hash: str
    round: int = Field(ge=1, lt=2**63)
    signature: str = Field(max_length=192)
    previous_signature: str = Field(max_length=192)  # required: "" when the network has none (a bundle has one encoding)

    @field_validator("chain_hash")
    @classmethod
    def _ch(cls, v: str) -> str:
        return _hex(v, 32)

    @field_validator("signature", "previous_signature")
    @classmethod
    def _sig(cls, v: str) -> str:
        return _hex(v)

    def to_beacon(self) -> Beacon:
        return Beacon(bytes.fromhex(self.chain_hash), self.round, bytes.fromhex(self.signature),
                      bytes.fromhex(self.previous_signature))

    @classmethod
    def from_beacon(cls, b: Beacon) -> "BeaconModel":
        return cls(chain_hash=b.chain_hash.hex(), round=b.round, signature=b.signature.hex(),
                   previous_signature=b.previous_signature.hex())


class Header(_Strict):
    protocol_version: int
    netuid: int = Field(ge=0, le=65535)
    window: int = Field(ge=0, lt=2**63)
    block_hash: str
    block_time: int = Field(ge=0, lt=2**63)
    hotkey: str = Field(min_length=1, max_length=MAX_HOTKEY_LEN)
    beacon: BeaconModel
    model_fingerprint: str
    group_size: int = Field(ge=1, le=64)
    max_new_tokens: int = Field(ge=1, le=4096)
    n_groups: int = Field(ge=0, le=MAX_GROUPS_PER_BUNDLE)
    rows_root: str

    @field_validator("block_hash", "model_fingerprint", "rows_root")
    @classmethod
    def _h32(cls, v: str) -> str:
        return _hex(v, 32)

    @field_validator("protocol_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != PROTOCOL_VERSION:
            raise ValueError(f"protocol version {v} is not {PROTOCOL_VERSION}")
        return v

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.model_dump())

    def signing_message(self) -> bytes:
        return prf("bundle-header", self.canonical_bytes())


class RolloutModel(_Strict):
    index: int = Field(ge=0, lt=64)
    completion: str = Field(max_length=4 * 4096 * 2)
    logprobs: str = Field(max_length=4 * 4096 * 2)
    sketches: str = Field(max_length=2 * SKETCH_DIM * 4096 * 2)
    reward: int = Field(ge=0, le=10**12)
    advantage: int = Field(ge=-(2**62), le=2**62)

    @field_validator("completion", "logprobs", "sketches")
    @classmethod
    def _b64(cls, v: str) -> str:
        if not _B64.fullmatch(v):
            raise ValueError("expected standard base64")
        return v


class GroupModel(_Strict):
    index: int = Field(ge=0, lt=MAX_GROUPS_PER_BUNDLE)
    environment: str = Field(min_length=1, max_length=MAX_ENV_NAME_LEN)
    prompt: str = Field(max_length=4 * MAX_PROMPT_TOKENS * 2)
    rollouts: list[RolloutModel] = Field(max_length=64)

    @field_validator("prompt")
    @classmethod
    def _b64(cls, v: str) -> str:
        if not _B64.fullmatch(v):
            raise ValueError("expected standard base64")
        return v


class BundleDocument(_Strict):
    header: Header
    signature: str = Field(max_length=128)
    groups: list[GroupModel] = Field(max_length=MAX_GROUPS_PER_BUNDLE)

    @field_validator("signature")
    @classmethod
    def _sig(cls, v: str) -> str:
        return _hex(v, 64)


# ---- decoded, array form -----------------------------------------------------------------------
@dataclass
class Rollout:
    index: int
    completion: np.ndarray  # uint32 [C]
    logprobs: np.ndarray  # float32 [C]
    sketches: np.ndarray  # int16 [C, SKETCH_DIM]
    reward: int
    advantage: int


@dataclass
class Group:
    index: int
    environment: str
    prompt: np.ndarray  # uint32 [P]
    rollouts: list[Rollout]


@dataclass
class Bundle:
    header: Header
    signature: bytes
    groups: list[Group]

    def rows(self):
        for g in self.groups:
            for r in g.rollouts:
                yield g, r


def _b64encode(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def _b64decode(text: str, dtype: str, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleFormatError(f"{what}: bad base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        # nonzero padding bits decode to the same bytes; refusing them keeps one encoding per bundle
        raise BundleFormatError(f"{what}: non-canonical base64 (nonzero padding bits)")
    item = np.dtype(dtype).itemsize
    if len(raw) % item:
        raise BundleFormatError(f"{what}: {len(raw)} bytes is not a whole number of {dtype}")
    return np.frombuffer(raw, dtype=dtype).copy()


def row_digest(group_index: int, environment: str, prompt: np.ndarray, rollout: Rollout) -> bytes:
    return prf(
        "row",
        group_index,
        rollout.index,
        environment,
        np.ascontiguousarray(prompt, dtype="<u4").tobytes(),
        np.ascontiguousarray(rollout.completion, dtype="<u4").tobytes(),
        np.ascontiguousarray(rollout.logprobs, dtype="<f4").tobytes(),
        np.ascontiguousarray(rollout.sketches, dtype="<i2").tobytes(),
        rollout.reward,
        int(rollout.advantage).to_bytes(8, "big", signed=True),
    )


def completion_digest(prompt: np.ndarray, rollout: Rollout) -> bytes:
    """What copycat labelling compares across miners: PRF("copy", u32le prompt, u32le completion).
    A failed miner whose bad_problem rows equal an accepted miner's rows is reported as a copycat
    (docs/protocol.md section 13); it plays no part in crediting rows."""
    return prf("copy", np.ascontiguousarray(prompt, dtype="<u4").tobytes(),
               np.ascontiguousarray(rollout.completion, dtype="<u4").tobytes())


def rows_root(groups: list[Group]) -> bytes:
    return merkle_root([row_digest(g.index, g.environment, g.prompt, r) for g in groups for r in g.rollouts])


def to_document(bundle: Bundle) -> dict:
    return {
        "header": bundle.header.model_dump(),
        "signature": bundle.signature.hex(),
        "groups": [
            {
                "index": g.index,
                "environment": g.environment,
                "prompt": _b64encode(g.prompt, "<u4"),
                "rollouts": [
                    {
                        "index": r.index,
                        "completion": _b64encode(r.completion, "<u4"),
                        "logprobs": _b64encode(r.logprobs, "<f4"),
                        "sketches": _b64encode(r.sketches, "<i2"),
                        "reward": int(r.reward),
                        "advantage": int(r.advantage),
                    }
                    for r in g.rollouts
                ],
            }
            for g in bundle.groups
        ],
    }


def encode_bundle(bundle: Bundle) -> bytes:
    data = BUNDLE_MAGIC + canonical_json(to_document(bundle))
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleTooLargeError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    return data


def bundle_hash(data: bytes) -> bytes:
    """The 32 bytes a miner commits on chain for its bundle file."""
    return hashlib.sha256(data).digest()


def check_bundle_size(size: int, *, max_bytes: int = MAX_BUNDLE_BYTES, generation=None,
                      n_groups: int | None = None) -> None:
    """BundleTooLargeError when a bundle of `size` bytes is over max_bytes or, given the window's
    generation params, over what an honest miner can build under them (bundle_size.bundle_limit;
    n_groups defaults to the params' groups): the size rule of section 9, applied before parsing."""
    limit = max_bytes if generation is None else min(max_bytes, bundle_limit(generation, n_groups))
    if size > limit:
        raise BundleTooLargeError(f"bundle of {size} bytes exceeds the limit of {limit}")


def decode_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES, generation=None,
                  n_groups: int | None = None) -> Bundle:
    """Parse and structurally validate a bundle. Raises BundleFormatError (never anything else).

    `generation` (the window's generation params, anything with group_size and max_new_tokens):
    a bundle larger than what an honest miner can build under them with at most n_groups groups
    (verification.bundle_size.max_bundle_bytes) is BundleTooLargeError, before any parsing;
    n_groups defaults to the params' `groups` (MAX_GROUPS_PER_BUNDLE without params).
    Without it only max_bytes and the schema's absolute ranges bound the file. Either way a linear
    scan refuses a body holding more JSON structure than n_groups groups of group_size rollouts
    can have before the JSON parser allocates anything, so parsing memory stays a small multiple
    of the file's size (docs/security.md, reports/hostile_bundles.md)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BundleFormatError("bundle must be bytes")
    data = bytes(data)
    if n_groups is None:
        n_groups = getattr(generation, "groups", MAX_GROUPS_PER_BUNDLE)
    check_bundle_size(len(data), max_bytes=max_bytes, generation=generation, n_groups=n_groups)
    if not data.startswith(BUNDLE_MAGIC):
        raise BundleFormatError("not a rollproof bundle (bad magic)")
    body = data[len(BUNDLE_MAGIC):]
    _check_shape(body, generation.group_size if generation is not None else MAX_GROUP_SIZE, n_groups)
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise BundleFormatError(f"bundle body is not valid JSON: {str(exc)[:200]}") from exc
    try:
        doc = BundleDocument.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BundleFormatError(f"bundle schema: {where}: {first.get('msg')}") from exc
    if canonical_json(obj) != body:
        raise BundleFormatError("bundle is not in canonical form")
    return _from_document(doc)


def _check_shape(body: bytes, group_size: int, n_groups: int) -> None:
    """Refuse, before json.loads, a body nesting deeper than MAX_JSON_DEPTH (the parser recurses
    once per level) or holding more objects, arrays, keys, values or longer numbers than a bundle
    of n_groups groups of group_size rollouts has: each of those would become a Python object of
    ~50-100 bytes, so `[{},{},...]` would cost ~30x its size; within these counts parsing costs
    about the strings' bytes plus a bounded number of small objects. The scan itself is
    vectorized in fixed chunks (verification.json_depth.scan_json): no object per token."""
    shape = scan_json(body, MAX_NUMBER_CHARS)
    if shape.depth > MAX_JSON_DEPTH:
        raise BundleFormatError(f"bundle body nests {shape.depth} deep (limit {MAX_JSON_DEPTH})")
    limits = shape_limits(group_size, n_groups)
    for what, have, most in (("objects", shape.objects, limits.objects), ("arrays", shape.arrays, limits.arrays),
                             ("keys", shape.keys, limits.keys), ("commas", shape.commas, limits.commas),
                             ("strings", shape.strings, limits.strings)):
        if have > most:
            raise BundleFormatError(f"bundle body holds {have} JSON {what}; {n_groups} groups of {group_size} "
                                    f"rollouts have at most {most}")
    if shape.long_number:
        raise BundleFormatError(f"bundle body holds a number longer than {MAX_NUMBER_CHARS} characters")


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} is not allowed")


def _from_document(doc: BundleDocument) -> Bundle:
    header = doc.header
    if len(doc.groups) != header.n_groups:
        raise BundleFormatError(f"header says {header.n_groups} groups, body has {len(doc.groups)}")
    groups: list[Group] = []
    for gi, g in enumerate(doc.groups):
        if g.index != gi:
            raise BundleFormatError(f"group {gi} carries index {g.index}; groups must be 0..n-1 in order")
        if len(g.rollouts) != header.group_size:
            raise BundleFormatError(f"group {gi} has {len(g.rollouts)} rollouts, header says {header.group_size}")
        prompt = _b64decode(g.prompt, "<u4", f"group {gi} prompt")
        if not 1 <= len(prompt) <= MAX_PROMPT_TOKENS:
            raise BundleFormatError(f"group {gi} prompt has {len(prompt)} tokens")
        rollouts = []
        for ri, r in enumerate(g.rollouts):
            where = f"group {gi} rollout {ri}"
            if r.index != ri:
                raise BundleFormatError(f"{where} carries index {r.index}")
            completion = _b64decode(r.completion, "<u4", f"{where} completion")
            logprobs = _b64decode(r.logprobs, "<f4", f"{where} logprobs")
            sketches = _b64decode(r.sketches, "<i2", f"{where} sketches")
            c = len(completion)
            if not 1 <= c <= min(header.max_new_tokens, MAX_NEW_TOKENS):
                raise BundleFormatError(f"{where} has {c} completion tokens")
            if len(logprobs) != c:
                raise BundleFormatError(f"{where}: {len(logprobs)} logprobs for {c} tokens")
            if len(sketches) != c * SKETCH_DIM:
                raise BundleFormatError(f"{where}: sketch length {len(sketches)} != {c} x {SKETCH_DIM}")
            if not np.all(np.isfinite(logprobs)):
                raise BundleFormatError(f"{where}: non-finite logprob")
            rollouts.append(Rollout(ri, completion, logprobs, sketches.reshape(c, SKETCH_DIM), r.reward, r.advantage))
        groups.append(Group(gi, g.environment, prompt, rollouts))
    return Bundle(header=header, signature=bytes.fromhex(doc.signature), groups=groups)
