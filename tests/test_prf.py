import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification.prf import prf, prf_bytes, sample_distinct, uniform_below, word_stream

parts = st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=20), st.integers(0, 2**64 - 1)), max_size=5)


@given(parts)
def test_prf_is_deterministic_and_32_bytes(ps):
    assert prf("d", *ps) == prf("d", *ps)
    assert len(prf("d", *ps)) == 32


@given(parts, parts)
def test_framing_is_injective(a, b):
    # different part lists never collide (types and lengths are framed)
    def norm(ps):
        return [(type(p).__name__, p) for p in ps]

    if norm(a) != norm(b):
        assert prf("d", *a) != prf("d", *b)


@given(parts)
def test_domains_separate(ps):
    assert prf("a", *ps) != prf("b", *ps)


def test_concatenation_is_not_ambiguous():
    assert prf("d", b"ab", b"c") != prf("d", b"a", b"bc")
    assert prf("d", 1) != prf("d", (1).to_bytes(8, "big"))
    assert prf("d", "x") != prf("d", b"x")


def test_bad_parts_raise_typed_errors():
    with pytest.raises(ValueError):
        prf("d", -1)
    with pytest.raises(ValueError):
        prf("d", 2**64)
    with pytest.raises(TypeError):
        prf("d", True)
    with pytest.raises(TypeError):
        prf("d", 1.5)
    with pytest.raises(ValueError):
        prf("")


@given(st.binary(min_size=1, max_size=16), st.integers(1, 2000))
def test_prf_bytes_prefix_stable(key, n):
    assert prf_bytes(n, "x", key)[: n // 2] == prf_bytes(n // 2, "x", key)
    assert len(prf_bytes(n, "x", key)) == n


@given(st.binary(min_size=1, max_size=8), st.integers(1, 10**12))
def test_uniform_below_in_range(key, n):
    words = word_stream(key)
    for _ in range(5):
        assert 0 <= uniform_below(words, n) < n


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=8), st.integers(0, 300), st.integers(0, 320))
def test_sample_distinct(key, n, k):
    out = sample_distinct(key, n, k)
    assert len(out) == min(n, k)
    assert len(set(out)) == len(out)
    assert all(0 <= i < n for i in out)
    assert out == sample_distinct(key, n, k)
    # a prefix property: asking for fewer gives a prefix of the draw order
    assert sample_distinct(key, n, k // 2) == out[: min(n, k // 2)]


def test_uniform_below_is_roughly_uniform():
    words = word_stream(b"uniformity")
    counts = [0] * 6
    for _ in range(6000):
        counts[uniform_below(words, 6)] += 1
    assert all(850 < c < 1150 for c in counts)
