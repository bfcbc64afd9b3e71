"""Checkpoint announcements in a subtensor commitment (verification/announcement.py): round trips,
one encoding each, typed refusals, the size the Commitments pallet's budget allows, and the window
rule walked over a commitment history (adapters/chain/subtensor_announcements.py) against the
protocol's checkpoint_for over every announcement ever made."""

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapters.chain.bittensor_chain import MAX_FIELDS, RAW_FIELD_BYTES
from adapters.chain.subtensor_announcements import AnnouncementHistory
from verification.announcement import (
    ANNOUNCEMENT_HEAD_BYTES, ANNOUNCEMENT_MAGIC, MAX_ANNOUNCEMENT_BASE_BYTES, MAX_ANNOUNCEMENT_BYTES,
    AnnouncementCommitment, announcement_state_block, checkpoint_manifest_name, decode_announcement,
    encode_announcement, valid_on_subtensor,
)
from verification.checkpoint import checkpoint_for
from verification.constants import ACTIVATION_WINDOWS, MAX_CHECKPOINT_LOCATION_BYTES, WINDOW_BLOCKS
from verification.errors import ChainError, CheckpointError

NETUID = 7
url_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
schemes = st.sampled_from(["file:///", "s3://", "https://", "http://"])
digests = st.binary(min_size=32, max_size=32)
windows = st.integers(0, 2**64 - 1)
bases = st.builds(lambda s, p: s + p + "/", schemes, st.text(alphabet=url_chars, max_size=40))
full = st.builds(lambda s, p, last: s + p + last, schemes, st.text(alphabet=url_chars, max_size=50),
                 url_chars.filter(lambda c: c != "/"))
R2_BASE = "https://pub-0123456789abcdef0123456789abcdef.r2.dev/rp/"  # 55 bytes


@given(windows, digests, digests, bases)
def test_a_manifest_under_a_base_is_announced_as_the_base(window, fp, mh, base):
    location = base + checkpoint_manifest_name(NETUID, fp)
    data = encode_announcement(NETUID, window, fp, mh, location)
    assert data == ANNOUNCEMENT_MAGIC + struct.pack(">Q", window) + fp + mh + base.encode()
    assert decode_announcement(NETUID, data) == AnnouncementCommitment(window, fp, mh, location)


@given(windows, digests, digests, full)
def test_a_full_location_round_trips(window, fp, mh, location):
    assume(not location.endswith("/" + checkpoint_manifest_name(NETUID, fp)))
    data = encode_announcement(NETUID, window, fp, mh, location)
    assert decode_announcement(NETUID, data) == AnnouncementCommitment(window, fp, mh, location)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_the_parser_raises_only_its_typed_error_and_encodings_are_unique(data):
    try:
        c = decode_announcement(NETUID, data)
    except CheckpointError:
        return
    assert encode_announcement(NETUID, c.from_window, c.fingerprint, c.manifest_hash, c.location) == data


def test_a_bundle_commitment_is_not_an_announcement():
    from verification.commitment import bundle_name, encode_commitment

    data = encode_commitment(3, b"\x01" * 32, R2_BASE + bundle_name(3, b"\x01" * 32))
    with pytest.raises(CheckpointError, match="not a rollproof checkpoint announcement"):
        decode_announcement(NETUID, data)


def test_bad_announcements_are_refused():
    fp, mh = b"\x02" * 32, b"\x03" * 32
    head = ANNOUNCEMENT_MAGIC + struct.pack(">Q", 4) + fp + mh
    # the long form of a base location cannot be committed: it is over the size limit
    with pytest.raises(CheckpointError, match="over 150"):
        decode_announcement(NETUID, head + ("s3://b/" + checkpoint_manifest_name(NETUID, fp)).encode())
    with pytest.raises(CheckpointError, match="UTF-8"):
        decode_announcement(NETUID, head + b"https://\xff/")
    with pytest.raises(CheckpointError):
        decode_announcement(NETUID, head)  # no location
    for bad in ("ftp://x/m.json", "https://x/a b", "https://host/dir/", "s3://" + "x" * MAX_ANNOUNCEMENT_BASE_BYTES):
        with pytest.raises(CheckpointError):
            encode_announcement(NETUID, 4, fp, mh, bad)
    with pytest.raises(CheckpointError):
        encode_announcement(NETUID, 4, fp[:31], mh, "s3://b/")
    with pytest.raises(CheckpointError):
        encode_announcement(NETUID, -1, fp, mh, "s3://b/" + checkpoint_manifest_name(NETUID, fp))


def test_announcements_fit_the_commitment_budget_in_every_window_of_an_interval():
    # the longest base fills MAX_ANNOUNCEMENT_BYTES exactly: two Raw fields
    assert ANNOUNCEMENT_HEAD_BYTES + MAX_ANNOUNCEMENT_BASE_BYTES == MAX_ANNOUNCEMENT_BYTES <= MAX_FIELDS * RAW_FIELD_BYTES
    fp = b"\xff" * 32
    data = encode_announcement(NETUID, 2**40, fp, fp, R2_BASE + checkpoint_manifest_name(NETUID, fp))
    assert len(data) == ANNOUNCEMENT_HEAD_BYTES + len(R2_BASE) <= MAX_ANNOUNCEMENT_BYTES
    # finney: usage interval of tempo + 1 = 361 blocks, at most ceil(361 / 20) = 19 window starts,
    # each charged max(bytes, 100) against MaxSpace 3100, with one more full announcement to spare
    starts = -(-361 // WINDOW_BLOCKS)
    assert starts == 19 and starts * max(MAX_ANNOUNCEMENT_BYTES, 100) + MAX_ANNOUNCEMENT_BYTES <= 3100
    # a completed location stays within the Announcement's own limit
    longest = "s3://" + "b" * (MAX_ANNOUNCEMENT_BASE_BYTES - 6) + "/"
    c = decode_announcement(99999, encode_announcement(99999, 1, fp, fp, longest + checkpoint_manifest_name(99999, fp)))
    assert len(c.location) <= MAX_CHECKPOINT_LOCATION_BYTES
    c.at_block(0)


def test_the_state_block_of_a_window():
    assert announcement_state_block(ACTIVATION_WINDOWS - 1) is None
    w = 10
    at = announcement_state_block(w)
    assert at == (w - ACTIVATION_WINDOWS + 1) * WINDOW_BLOCKS - 1
    assert valid_on_subtensor(w, at) and not valid_on_subtensor(w, at + 1)
    assert valid_on_subtensor(w, (w - ACTIVATION_WINDOWS) * WINDOW_BLOCKS)
    assert not valid_on_subtensor(w + 1, at)  # announced further ahead: ignored on subtensor


# ---- the rule over a commitment history ------------------------------------------------------------
class History:
    """One chain's commitments per hotkey: (landed block, bytes), in landing order. read(hotkey,
    block) answers as the state of `block` does: the latest commitment landed at or before it."""

    def __init__(self):
        self.landed: dict[str, list[tuple[int, bytes]]] = {}

    def commit(self, hotkey: str, block: int, data: bytes) -> None:
        rows = self.landed.setdefault(hotkey, [])
        assert not rows or rows[-1][0] < block
        rows.append((block, data))

    def read(self, hotkey: str, block: int):
        rows = [r for r in self.landed.get(hotkey, []) if r[0] <= block]
        return rows[-1] if rows else None


def _announce(history, hotkey, block, from_window, tag: int):
    fp = bytes([tag]) * 32
    history.commit(hotkey, block, encode_announcement(NETUID, from_window, fp, b"\x00" * 32,
                                                      "s3://b/" + checkpoint_manifest_name(NETUID, fp)))


def _every_announcement(history, hotkey):
    out = []
    for block, data in history.landed.get(hotkey, []):
        try:
            c = decode_announcement(NETUID, data)
        except CheckpointError:
            continue
        if valid_on_subtensor(c.from_window, block):
            out.append(c.at_block(block))
    return out


events = st.lists(st.tuples(st.integers(1, 25), st.sampled_from(["ok", "late", "ahead", "other", "junk"])),
                  min_size=0, max_size=25)


@settings(max_examples=150, deadline=None)
@given(events)
def test_the_walk_gives_the_protocol_rule_for_every_window(steps):
    """Whatever the announcer committed (valid announcements, late ones, ones for a later window,
    bundle commitments, junk) and whatever another hotkey announced, the walked rule equals
    checkpoint_for over every valid announcement the announcer ever made, for every window; and
    recent() lists enough for checkpoint_for to agree from its since-block on."""
    from verification.commitment import bundle_name, encode_commitment

    history, block = History(), 0
    for i, (gap, kind) in enumerate(steps):
        block += gap
        w = block // WINDOW_BLOCKS
        if kind == "ok":
            _announce(history, "owner", block, w + ACTIVATION_WINDOWS, i + 1)
        elif kind == "late":
            _announce(history, "owner", block, w + ACTIVATION_WINDOWS - 1, i + 1)
        elif kind == "ahead":
            _announce(history, "owner", block, w + ACTIVATION_WINDOWS + 3, i + 1)
        elif kind == "other":
            _announce(history, "stranger", block, w + ACTIVATION_WINDOWS, i + 1)
        else:
            history.commit("owner", block, encode_commitment(w, b"\x09" * 32, "s3://b/" + bundle_name(w, b"\x09" * 32)))
    head = block + 3 * WINDOW_BLOCKS
    truth = _every_announcement(history, "owner")
    walker = AnnouncementHistory(NETUID, history.read)
    for window in range(head // WINDOW_BLOCKS + 1):
        assert walker.in_force("owner", window) == checkpoint_for(window, truth), window
    since = max(0, head - 4 * WINDOW_BLOCKS)
    recent = AnnouncementHistory(NETUID, history.read).recent("owner", head, since)
    for window in range(head // WINDOW_BLOCKS + 1):
        if announcement_state_block(window) is not None and announcement_state_block(window) >= since:
            assert checkpoint_for(window, recent) == checkpoint_for(window, truth), window


def test_the_walk_reads_each_commitment_once():
    history = History()
    for i in range(6):
        _announce(history, "owner", 20 * i + 1, i + ACTIVATION_WINDOWS, i + 1)
    walker = AnnouncementHistory(NETUID, history.read)
    assert walker.in_force("owner", 7).from_window == 7
    reads = walker.reads
    walker.in_force("owner", 7)
    assert walker.reads == reads + 1  # only the state block itself is read again
    assert walker.in_force("owner", 1) is None and walker.in_force("owner", 2).from_window == 2


def test_a_long_run_without_an_announcement_is_a_typed_error():
    from verification.commitment import bundle_name, encode_commitment

    history = History()
    _announce(history, "owner", 1, ACTIVATION_WINDOWS, 1)
    for b in range(2, 80):
        history.commit("owner", b, encode_commitment(0, b"\x01" * 32, "s3://b/" + bundle_name(0, b"\x01" * 32)))
    walker = AnnouncementHistory(NETUID, history.read, max_walk=64)
    with pytest.raises(CheckpointError, match="more than 64 commitments"):
        walker.in_force("owner", 10)


def test_a_node_answering_with_a_later_commitment_is_an_error():
    walker = AnnouncementHistory(NETUID, lambda hotkey, block: (block + 5, b"x"))
    with pytest.raises(ChainError, match="landed in block"):
        walker.in_force("owner", 5)
