import base64
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verification.bundle import (
    BeaconModel, Bundle, Group, Header, Rollout, canonical_json, decode_bundle, encode_bundle, rows_root,
)
from verification.constants import BUNDLE_MAGIC, PROTOCOL_VERSION, SKETCH_DIM

GROUP_SIZE, MAX_NEW_TOKENS = 4, 96  # any valid header values: the parser checks shape, not checkpoint params
from verification.errors import BundleFormatError, BundleTooLargeError
from verification.json_depth import nesting_depth


@st.composite
def rollouts(draw, index):
    c = draw(st.integers(1, 12))
    return Rollout(
        index,
        np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=c, max_size=c)), dtype=np.uint32),
        np.asarray(draw(st.lists(st.floats(-50, 0, width=32), min_size=c, max_size=c)), dtype=np.float32),
        np.asarray(draw(st.lists(st.integers(-32767, 32767), min_size=c * SKETCH_DIM, max_size=c * SKETCH_DIM)),
                   dtype=np.int16).reshape(c, SKETCH_DIM),
        draw(st.integers(0, 10**6)),
        draw(st.integers(-(10**7), 10**7)),
    )


@st.composite
def bundles(draw):
    n_groups = draw(st.integers(0, 3))
    groups = []
    for gi in range(n_groups):
        p = draw(st.integers(1, 10))
        prompt = np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=p, max_size=p)), dtype=np.uint32)
        groups.append(Group(gi, draw(st.sampled_from(["sat", "arith"])), prompt,
                            [draw(rollouts(r)) for r in range(GROUP_SIZE)]))
    header = Header(
        protocol_version=PROTOCOL_VERSION, netuid=draw(st.integers(0, 65535)), window=draw(st.integers(0, 2**40)),
        block_hash=draw(st.binary(min_size=32, max_size=32)).hex(), block_time=draw(st.integers(0, 2**40)),
        hotkey=draw(st.text("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ123456789", min_size=1, max_size=48)),
        beacon=BeaconModel(chain_hash="00" * 32, round=draw(st.integers(1, 2**40)), signature="ab" * 48, previous_signature=""),
        model_fingerprint="11" * 32, group_size=GROUP_SIZE, max_new_tokens=MAX_NEW_TOKENS, n_groups=n_groups,
        rows_root=rows_root(groups).hex(),
    )
    return Bundle(header, draw(st.binary(min_size=64, max_size=64)), groups)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(bundles())
def test_round_trip_is_exact_and_canonical(b):
    data = encode_bundle(b)
    back = decode_bundle(data)
    assert encode_bundle(back) == data
    assert rows_root(back.groups).hex() == back.header.rows_root
    assert back.header == b.header and back.signature == b.signature
    for (g1, r1), (g2, r2) in zip(b.rows(), back.rows()):
        assert np.array_equal(r1.completion, r2.completion)
        assert np.array_equal(r1.logprobs.view(np.uint32), r2.logprobs.view(np.uint32))
        assert np.array_equal(r1.sketches, r2.sketches)
        assert (r1.reward, r1.advantage) == (r2.reward, r2.advantage)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(bundles(), st.data())
def test_row_root_binds_every_field(b, data):
    if not b.groups:
        return
    root = rows_root(b.groups)
    b2 = copy.deepcopy(b)
    g = data.draw(st.sampled_from(b2.groups))
    r = data.draw(st.sampled_from(g.rollouts))
    field = data.draw(st.sampled_from(["completion", "logprobs", "sketches", "reward", "advantage", "prompt"]))
    if field == "completion":
        r.completion[0] ^= 1
    elif field == "logprobs":
        r.logprobs.view(np.uint32)[0] ^= 1
    elif field == "sketches":
        r.sketches[0, 0] ^= 1
    elif field == "reward":
        r.reward += 1
    elif field == "advantage":
        r.advantage += 1
    else:
        g.prompt[0] ^= 1
    assert rows_root(b2.groups) != root


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_raise_typed_error(data):
    with pytest.raises(BundleFormatError):
        decode_bundle(data)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_body_after_magic_raises_typed_error(data):
    with pytest.raises(BundleFormatError):
        decode_bundle(BUNDLE_MAGIC + data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(bundles(), st.data())
def test_mutated_bytes_never_crash(b, data):
    raw = bytearray(encode_bundle(b))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[i:]
            if not raw:
                raw = bytearray(b"x")
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        out = decode_bundle(bytes(raw))
    except BundleFormatError:
        return
    # a mutation that still parses must still be canonical and self-consistent
    assert encode_bundle(out) == bytes(raw)


def test_json_structure_attacks(honest_bundle):
    doc = json.loads(encode_bundle(honest_bundle)[len(BUNDLE_MAGIC):])
    cases = []
    d = copy.deepcopy(doc); d["header"]["extra"] = 1; cases.append(d)
    d = copy.deepcopy(doc); d["header"]["protocol_version"] = 99; cases.append(d)
    d = copy.deepcopy(doc); d["header"]["n_groups"] += 1; cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["rollouts"].pop(); cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["rollouts"][0]["logprobs"] = "AAAA"; cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["rollouts"][0]["reward"] = 1.5; cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["rollouts"][0]["reward"] = "1"; cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["index"] = 1; cases.append(d)
    d = copy.deepcopy(doc); d["signature"] = "zz" * 64; cases.append(d)
    # one encoding per bundle: the beacon's previous_signature is required, hex has no trailing newline
    d = copy.deepcopy(doc); del d["header"]["beacon"]["previous_signature"]; cases.append(d)
    d = copy.deepcopy(doc); d["header"]["beacon"]["signature"] += "\n"; cases.append(d)
    d = copy.deepcopy(doc); d["signature"] = d["signature"][:-2] + "\n"; cases.append(d)
    d = copy.deepcopy(doc); d["groups"][0]["prompt"] += "\n"; cases.append(d)
    for case in cases:
        with pytest.raises(BundleFormatError):
            decode_bundle(BUNDLE_MAGIC + canonical_json(case))
    # non-canonical but equivalent JSON
    with pytest.raises(BundleFormatError, match="canonical"):
        decode_bundle(BUNDLE_MAGIC + json.dumps(doc, indent=1).encode())
    # NaN smuggled in
    with pytest.raises(BundleFormatError):
        decode_bundle(BUNDLE_MAGIC + canonical_json(doc).replace(b'"reward":0', b'"reward":NaN', 1))
    # deep nesting
    with pytest.raises(BundleFormatError, match="nests 100000 deep"):
        decode_bundle(BUNDLE_MAGIC + b"[" * 100000 + b"]" * 100000)


def test_deep_nesting_cannot_crash_the_parser():
    """Even with the recursion limit raised (as some libraries do), a deeply nested body is refused
    before the C JSON scanner can overflow its stack; in a subprocess so a crash fails the test
    instead of killing the run."""
    code = (
        "import sys; sys.setrecursionlimit(10**7)\n"
        "from verification.bundle import decode_bundle\n"
        "from verification.constants import BUNDLE_MAGIC\n"
        "from verification.errors import BundleFormatError\n"
        "for body in (b'[' * 10**6, b'{\"a\":' * 10**6, b'[\"x\",' * 10**6):\n"
        "    try:\n"
        "        decode_bundle(BUNDLE_MAGIC + body)\n"
        "    except BundleFormatError as exc:\n"
        "        assert 'deep' in str(exc), exc\n"
        "    else:\n"
        "        raise SystemExit('accepted')\n"
        "print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "refused"


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:\n\u00e9'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\x', max_size=4), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300)
@given(json_values, st.booleans())
def test_nesting_depth_matches_the_structure(value, ascii_only):
    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


def test_size_limit(honest_bundle):
    data = encode_bundle(honest_bundle)
    with pytest.raises(BundleTooLargeError):
        decode_bundle(data, max_bytes=len(data) - 1)
    assert decode_bundle(data, max_bytes=len(data)).header == honest_bundle.header


def test_nonzero_base64_padding_bits_are_rejected(honest_bundle):
    raw = encode_bundle(honest_bundle)
    doc = json.loads(raw[len(BUNDLE_MAGIC):])
    # find a base64 field (a prompt or a rollout array) whose last data character carries padding
    # bits, and set one of them
    holders = [doc["groups"][g] for g in range(len(doc["groups"]))]
    holders += [r for g in doc["groups"] for r in g["rollouts"]]
    holder, k = next((h, k) for h in holders for k in ("prompt", "completion", "logprobs", "sketches")
                     if isinstance(h.get(k), str) and h[k].endswith("="))
    text = holder[k]
    pad = len(text) - len(text.rstrip("="))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = text[-pad - 1]
    tweaked = alphabet[alphabet.index(last) ^ 1]  # the lowest bit is always a padding bit here
    holder[k] = text[: -pad - 1] + tweaked + "=" * pad
    assert base64.b64decode(holder[k]) == base64.b64decode(text)
    bad = BUNDLE_MAGIC + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BundleFormatError, match="non-canonical base64"):
        decode_bundle(bad)
