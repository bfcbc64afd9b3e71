"""Random mutations of a valid bundle are always rejected with a named reason, never a crash."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verification.bundle import encode_bundle
from verification.verifier import REASONS


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_every_mutation_is_rejected_with_a_reason(verifier, honest_bundle, data):
    raw = bytearray(encode_bundle(honest_bundle))
    original = bytes(raw)
    for _ in range(data.draw(st.integers(1, 3), label="n mutations")):
        if not raw:  # an earlier truncation or deletion emptied it; the empty input is checked below
            break
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        kind = data.draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]), label="kind")
        if kind == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[i] = data.draw(st.sampled_from(b"0123456789abcdefABCDEF+/=\",:{}[]"))
        elif kind == "delete":
            del raw[i]
        elif kind == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            del raw[max(i, 1):]
    if bytes(raw) == original:
        return
    verdict = verifier.verify_bytes(bytes(raw))
    assert not verdict.ok
    assert verdict.reason in REASONS and verdict.reason != "ok"
    assert verdict.detail


def test_empty_and_one_byte_inputs_are_rejected_with_a_reason(verifier, honest_bundle):
    raw = encode_bundle(honest_bundle)
    for data in (b"", raw[:1], raw[-1:]):
        verdict = verifier.verify_bytes(data)
        assert not verdict.ok
        assert verdict.reason in REASONS and verdict.reason != "ok"
        assert verdict.detail
