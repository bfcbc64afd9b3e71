"""The commitment codec (docs/protocol.md section 12): round trips of both location forms, one
encoding per commitment, typed refusals, and the size that subtensor's commitment budget allows."""

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from verification.commitment import (
    COMMITMENT_HEAD_BYTES, MAX_BASE_BYTES, Commitment, bundle_name, committed_location, decode_commitment,
    encode_commitment,
)
from verification.constants import COMMITMENT_MAGIC, MAX_COMMITMENT_BYTES, MAX_LOCATION_BYTES
from verification.errors import CommitmentFormatError

url_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
schemes = st.sampled_from(["file:///", "s3://", "https://", "http://"])
windows = st.integers(0, 2**64 - 1)
digests = st.binary(min_size=32, max_size=32)
# a base: scheme + path ending in "/" (the form a miner commits for a store-written bundle)
bases = st.builds(lambda s, p: s + p + "/", schemes, st.text(alphabet=url_chars, max_size=120))
# a full location that does not end in "/"
full = st.builds(lambda s, p, last: s + p + last, schemes, st.text(alphabet=url_chars, max_size=150),
                 url_chars.filter(lambda c: c != "/"))


@given(windows, digests, bases)
def test_a_location_under_a_base_is_committed_as_the_base(window, digest, base):
    location = base + bundle_name(window, digest)
    data = encode_commitment(window, digest, location)
    assert data == COMMITMENT_MAGIC + struct.pack(">Q", window) + digest + base.encode()
    assert decode_commitment(data) == Commitment(window, digest, location)
    assert Commitment(window, digest, location).encode() == data


@given(windows, digests, full)
def test_a_full_location_round_trips(window, digest, location):
    assume(not location.endswith("/" + bundle_name(window, digest)))
    data = encode_commitment(window, digest, location)
    assert data[COMMITMENT_HEAD_BYTES:] == location.encode()
    assert decode_commitment(data) == Commitment(window, digest, location)


@given(st.binary(max_size=300))
def test_the_parser_only_raises_its_typed_error_and_encodings_are_unique(data):
    try:
        c = decode_commitment(data)
    except CommitmentFormatError:
        return
    assert encode_commitment(c.window, c.bundle_hash, c.location) == data


@given(windows, digests, bases, st.binary(min_size=1, max_size=3))
def test_any_other_magic_is_refused(window, digest, base, magic):
    data = encode_commitment(window, digest, base + bundle_name(window, digest))
    assume(magic != COMMITMENT_MAGIC[:len(magic)])
    with pytest.raises(CommitmentFormatError):
        decode_commitment(magic + data[len(magic):])


def test_the_long_form_of_a_base_location_is_refused():
    digest = b"\x07" * 32
    long_form = "https://pub.example/rp/" + bundle_name(9, digest)
    data = COMMITMENT_MAGIC + struct.pack(">Q", 9) + digest + long_form.encode()
    with pytest.raises(CommitmentFormatError, match="as its base"):
        decode_commitment(data)
    # the same location under another window's name is an ordinary full location
    assert decode_commitment(COMMITMENT_MAGIC + struct.pack(">Q", 10) + digest + long_form.encode()).location == long_form


@pytest.mark.parametrize("location", [
    "", "ftp://x/a.rpb", "file:///a b", "https://x/\x7f", "s3://" + "x" * MAX_LOCATION_BYTES,
    "https://host/dir/",  # ends in "/" without being this bundle's base
])
def test_bad_locations_are_refused(location):
    with pytest.raises(CommitmentFormatError):
        encode_commitment(1, b"\x00" * 32, location)


@pytest.mark.parametrize("window,digest", [(-1, b"\x00" * 32), (2**64, b"\x00" * 32), (1, b"\x00" * 31)])
def test_bad_windows_and_hashes_are_refused(window, digest):
    with pytest.raises(CommitmentFormatError):
        encode_commitment(window, digest, "https://x/a")


def test_truncated_and_non_utf8_commitments_are_refused():
    good = encode_commitment(3, b"\x01" * 32, "https://x/" + bundle_name(3, b"\x01" * 32))
    with pytest.raises(CommitmentFormatError):
        decode_commitment(good[:COMMITMENT_HEAD_BYTES])
    with pytest.raises(CommitmentFormatError, match="UTF-8"):
        decode_commitment(good[:COMMITMENT_HEAD_BYTES] + b"https://\xff/")


def test_a_public_r2_base_fits_the_subtensor_budget():
    # an R2 public development URL, the longest ordinary public base: 52 of MAX_BASE_BYTES (57)
    base = "https://pub-" + "0123456789abcdef" * 2 + ".r2.dev/"
    assert len(base) <= MAX_BASE_BYTES
    window, digest = 2**40, b"\xff" * 32
    data = encode_commitment(window, digest, base + bundle_name(window, digest))
    assert len(data) <= MAX_COMMITMENT_BYTES
    assert COMMITMENT_HEAD_BYTES + MAX_BASE_BYTES == MAX_COMMITMENT_BYTES


def test_committed_location_names_the_base():
    digest = b"\x02" * 32
    assert committed_location(4, digest, "s3://b/p/" + bundle_name(4, digest)) == "s3://b/p/"
    assert committed_location(4, digest, "s3://b/p/other.rpb") == "s3://b/p/other.rpb"
