"""The bundle size bound (verification/bundle_size.py) and the pre-parse shape scan: every bundle an
honest miner can build fits the bound of its window's generation params and passes the scan, the
bound is tight at the longest lengths, and bodies the schema cannot have are refused before the
JSON parser allocates them."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verification.bundle import BeaconModel, Bundle, Group, Header, Rollout, decode_bundle, encode_bundle, rows_root
from verification.bundle_size import (
    MAX_ENV_NAME_LEN, MAX_HOTKEY_LEN, b64_len, max_bundle_bytes, shape_limits,
)
from verification.constants import (
    BASE_GENERATION, BUNDLE_MAGIC, MAX_GROUPS_PER_BUNDLE, MAX_PROMPT_TOKENS, PROTOCOL_VERSION, SKETCH_DIM,
)
from verification.errors import BundleFormatError, BundleTooLargeError

SS58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# the tightness this module's bound promises for bundles at the longest prompts and completions
TIGHT_RATIO = 0.97


def _rollout(index: int, c: int, draw=None, *, longest: bool = False) -> Rollout:
    if longest:
        return Rollout(index, np.full(c, 2**32 - 1, np.uint32), np.full(c, -1e30, np.float32),
                       np.full((c, SKETCH_DIM), -32767, np.int16), 10**12, -(2**62))
    return Rollout(
        index,
        np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=c, max_size=c)), dtype=np.uint32),
        np.asarray(draw(st.lists(st.floats(float(np.float32(-1e30)), 0, width=32), min_size=c, max_size=c)), dtype=np.float32),
        np.asarray(draw(st.lists(st.integers(-32767, 32767), min_size=c * SKETCH_DIM, max_size=c * SKETCH_DIM)),
                   dtype=np.int16).reshape(c, SKETCH_DIM),
        draw(st.integers(0, 10**12)),
        draw(st.integers(-(2**62), 2**62)),
    )


def _bundle(groups: list[Group], group_size: int, max_new_tokens: int, hotkey: str) -> Bundle:
    header = Header(
        protocol_version=PROTOCOL_VERSION, netuid=65535, window=2**63 - 1, block_hash="ff" * 32,
        block_time=2**63 - 1, hotkey=hotkey,
        beacon=BeaconModel(chain_hash="00" * 32, round=2**63 - 1, signature="ab" * 96, previous_signature="cd" * 96),
        model_fingerprint="11" * 32, group_size=group_size, max_new_tokens=max_new_tokens, n_groups=len(groups),
        rows_root=rows_root(groups).hex(),
    )
    return Bundle(header, b"\x01" * 64, groups)


@st.composite
def honest_bundles(draw):
    """Bundles of any shape an honest miner can build: any group size and length up to the params',
    prompts up to MAX_PROMPT_TOKENS, any token ids, float bits, sketches, rewards and advantages."""
    group_size = draw(st.integers(2, 6))
    max_new_tokens = draw(st.integers(1, 40))
    n_groups = draw(st.integers(0, 3))
    groups = []
    for gi in range(n_groups):
        p = draw(st.integers(1, MAX_PROMPT_TOKENS))
        prompt = np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=p, max_size=p)), dtype=np.uint32)
        env = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=MAX_ENV_NAME_LEN))
        groups.append(Group(gi, env, prompt, [_rollout(r, draw(st.integers(1, max_new_tokens)), draw)
                                              for r in range(group_size)]))
    hotkey = draw(st.text(SS58, min_size=1, max_size=MAX_HOTKEY_LEN))
    return _bundle(groups, group_size, max_new_tokens, hotkey), n_groups


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(honest_bundles())
def test_every_honest_bundle_fits_its_bound_and_passes_the_scan(case):
    b, n_groups = case
    gen = SimpleNamespace(group_size=b.header.group_size, max_new_tokens=b.header.max_new_tokens)
    data = encode_bundle(b)
    assert len(data) <= max_bundle_bytes(gen.group_size, gen.max_new_tokens, n_groups)
    # the same bundle parses under the window's bound and shape limits, with its exact group count
    back = decode_bundle(data, generation=gen, n_groups=n_groups)
    assert encode_bundle(back) == data


@pytest.mark.parametrize("group_size,max_new_tokens,n_groups", [(8, 24, 8), (2, 1, 1), (16, 512, 2), (64, 64, 1)])
def test_the_bound_is_tight_at_the_longest_bundle(group_size, max_new_tokens, n_groups):
    groups = [Group(gi, "x" * MAX_ENV_NAME_LEN, np.full(MAX_PROMPT_TOKENS, 2**32 - 1, np.uint32),
                    [_rollout(r, max_new_tokens, longest=True) for r in range(group_size)])
              for gi in range(n_groups)]
    data = encode_bundle(_bundle(groups, group_size, max_new_tokens, "x" * MAX_HOTKEY_LEN))
    bound = max_bundle_bytes(group_size, max_new_tokens, n_groups)
    assert len(data) <= bound
    assert len(data) / bound >= TIGHT_RATIO, (len(data), bound)
    gen = SimpleNamespace(group_size=group_size, max_new_tokens=max_new_tokens)
    assert decode_bundle(data, generation=gen, n_groups=n_groups).header.n_groups == n_groups
    if n_groups > 1:  # a window allowing one group fewer refuses the same file by its size
        with pytest.raises(BundleTooLargeError):
            decode_bundle(data, generation=gen, n_groups=n_groups - 1)


def test_the_formula_by_hand():
    """The docstring's arithmetic for the base params: 16 bytes per token in base64, the prompt
    allowance of MAX_PROMPT_TOKENS ids, and the 256-group worst case about 1.5x an honest bundle."""
    g = BASE_GENERATION
    per_token = b64_len(4 * g["max_new_tokens"]) * 2 + b64_len(2 * SKETCH_DIM * g["max_new_tokens"])
    assert per_token == 128 + 128 + 256
    zero, one, two = (max_bundle_bytes(g["group_size"], g["max_new_tokens"], n) for n in (0, 1, 2))
    assert two - one == one - zero + 1  # each further group costs the same, plus its comma
    assert len(BUNDLE_MAGIC) < zero < 1200  # the frame and the longest header
    assert max_bundle_bytes(8, 24, MAX_GROUPS_PER_BUNDLE) < 2_100_000  # vs the 64 MiB absolute cap
    with pytest.raises(ValueError):
        max_bundle_bytes(0, 24, 1)
    with pytest.raises(ValueError):
        max_bundle_bytes(8, 24, MAX_GROUPS_PER_BUNDLE + 1)


# ---- bodies the schema cannot have are refused by the scan, before json.loads -----------------

GEN = SimpleNamespace(group_size=8, max_new_tokens=24)
BOUND = max_bundle_bytes(8, 24, MAX_GROUPS_PER_BUNDLE)


def _fill(unit: bytes, size: int = BOUND) -> bytes:
    body = b"[" + unit + (b"," + unit) * ((size - len(BUNDLE_MAGIC) - 2 - len(unit)) // (len(unit) + 1)) + b"]"
    return BUNDLE_MAGIC + body


@pytest.mark.parametrize("data,what", [
    (_fill(b"{}"), "JSON objects"),
    (_fill(b"[]"), "JSON arrays"),
    (_fill(b"0"), "JSON commas"),
    (_fill(b'""'), "JSON commas"),
    (BUNDLE_MAGIC + b"[" + b"[[[[[[[[[[[[{}]]]]]]]]]]]]" * 3000 + b"]", "JSON objects"),
    (BUNDLE_MAGIC + b'{"a":' + b"1" * 100 + b"}", "number longer than 20"),
    (BUNDLE_MAGIC + b"[" * 17 + b"]" * 17, "nests 17 deep"),
    (BUNDLE_MAGIC + b'{' + b",".join(b'"%d":0' % i for i in range(20000)) + b"}", "JSON keys"),
    (BUNDLE_MAGIC + b"[" + b",".join([b'"a\\"b"'] * 30000) + b"]", "JSON commas"),
], ids=["empty-objects", "empty-arrays", "flat-zeros", "empty-strings", "nested-no-commas", "long-number", "deep",
     "many-keys", "escaped-quotes"])
def test_structure_the_schema_cannot_hold_is_refused_before_parsing(data, what, monkeypatch):
    import json

    def no_parse(*a, **kw):  # the refusal must come from the scan, not from the parser or schema
        raise AssertionError("json.loads ran")

    monkeypatch.setattr(json, "loads", no_parse)
    assert len(data) <= BOUND
    with pytest.raises(BundleFormatError, match=what):
        decode_bundle(data, generation=GEN)


def test_the_shape_limits_are_the_schemas_counts():
    s = shape_limits(8, 2)
    assert (s.objects, s.arrays) == (3 + 2 + 16, 3)  # top, header, beacon, groups, rollouts; groups + rollouts lists
    assert s.keys == 3 + 12 + 4 + 2 * 4 + 16 * 6


def test_a_bundle_over_its_windows_bound_is_too_large_before_parsing():
    with pytest.raises(BundleTooLargeError, match=f"limit of {BOUND}"):
        decode_bundle(BUNDLE_MAGIC + b" " * BOUND, generation=GEN)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}",:\\ab\u00e9'),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.text(alphabet='[]{}",:\\a'), kids, max_size=4), max_leaves=20),
       st.booleans())
def test_the_vectorized_scan_agrees_with_the_parser(value, ascii_only):
    """scan_json sees the strings json.dumps writes (escaped quotes and backslashes included): its
    depth is the regex scan's, and its counts are those of the structure outside strings."""
    import json

    from verification.json_depth import nesting_depth, scan_json

    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    shape = scan_json(text)
    assert shape.depth == nesting_depth(text)
    assert shape.commas == text.count(b",") - sum(s.count(",") for s in _strings(value))
    assert shape.strings == len(_strings(value))


def _strings(v) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [s for x in v for s in _strings(x)]
    if isinstance(v, dict):
        return [s for k, x in v.items() for s in [k, *_strings(x)]]
    return []


def test_rollproof_verify_refuses_a_bundle_over_its_checkpoints_bound(tmp_path, tiny_base):
    """A well-formed bundle that only a window with longer generations could hold: bundle_too_large
    under the tiny model's params, before any model check."""
    from typer.testing import CliRunner

    from rollproof.cli import app

    s, t = 64, 512
    groups = [Group(gi, "add", np.ones(8, np.uint32), [_rollout(r, t, longest=True) for r in range(s)])
              for gi in range(3)]
    data = encode_bundle(_bundle(groups, s, t, "x" * MAX_HOTKEY_LEN))
    gen = tiny_base.generation  # what `--model tiny` loads: the base params, groups included
    bound = max_bundle_bytes(gen.group_size, gen.max_new_tokens, gen.groups)
    assert bound < len(data) < max_bundle_bytes(s, t, 3)
    path = tmp_path / "long.rpb"
    path.write_bytes(data)
    out = CliRunner().invoke(app, ["verify", str(path), "--model", "tiny"])
    assert out.exit_code == 1, out.output
    assert "bundle_too_large" in out.output and str(bound) in out.output.replace(",", "")


@pytest.mark.parametrize("shift", range(-3, 4))
def test_the_scan_carries_escapes_and_strings_across_its_chunks(shift):
    """An escaped quote, a run of backslashes or a long number split by the scan's 64 KiB chunk
    boundary is read as the parser reads it."""
    import json

    from verification.json_depth import _SCAN_CHUNK, nesting_depth, scan_json

    pad = "a" * (_SCAN_CHUNK - 4 + shift)
    value = [pad + '\\"[{', ["x\\\\", {"k": [1]}], 12345678901234567890]
    text = json.dumps(value, separators=(",", ":")).encode()
    shape = scan_json(text)
    assert shape.depth == nesting_depth(text) == 4
    assert (shape.strings, shape.objects, shape.arrays, shape.keys, shape.commas) == (3, 1, 3, 1, 3)
    assert not shape.long_number
    long = b"[" + b" " * (_SCAN_CHUNK - 12 + shift) + b"1" * 21 + b"]"
    assert scan_json(long).long_number and not scan_json(long.replace(b"1" * 21, b"1" * 20)).long_number
