"""Commitment bytes, window scoring, u16 normalization, the verified-rollout root."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification.commitment import Commitment, decode_commitment, encode_commitment
from verification.constants import MAX_LOCATION_BYTES, SCORE_EXPONENT, U16_MAX
from verification.errors import CommitmentFormatError
from verification.scoring import MinerOutcome, combine_windows, normalize_u16, score_window, verified_root

locations = st.builds(lambda scheme, path: scheme + path,
                      st.sampled_from(["file:///", "s3://", "https://"]),
                      st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=150))


@given(st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), locations)
def test_commitment_round_trip(window, digest, location):
    data = encode_commitment(window, digest, location)
    assert decode_commitment(data) == Commitment(window, digest, location)
    assert Commitment(window, digest, location).encode() == data


@given(st.binary(max_size=300))
def test_commitment_parser_only_raises_its_typed_error(data):
    try:
        c = decode_commitment(data)
    except CommitmentFormatError:
        return
    assert encode_commitment(c.window, c.bundle_hash, c.location) == data


@pytest.mark.parametrize("location", ["", "ftp://x", "file:///a b", "s3://" + "x" * MAX_LOCATION_BYTES])
def test_bad_locations_are_refused(location):
    with pytest.raises(CommitmentFormatError):
        encode_commitment(1, b"\x00" * 32, location)


def _outcome(uid, rows, ok=True, block=10, reason="ok"):
    return MinerOutcome(uid, f"hk{uid}", ok, reason, "", block, [bytes([r]) * 32 for r in rows], [])


def test_failed_miner_scores_zero_and_copies_count_once():
    scores = score_window([
        _outcome(0, [1, 2, 3, 4], block=10),
        _outcome(1, [1, 2, 3, 4], block=11),  # identical rows, later: copycat
        _outcome(2, [5, 6], block=9),
        _outcome(3, [7, 8, 9], ok=False, reason="sketch_mismatch"),
        _outcome(4, [5, 6], ok=False, block=12, reason="bad_problem"),  # failed and copied: reported copycat
    ])
    by = {s.uid: s for s in scores}
    assert by[0].unique_rollouts == 4 and by[0].weight == U16_MAX
    assert by[1].reason == "copycat" and by[1].weight == 0 and by[1].copied_rollouts == 4
    assert by[2].score == pytest.approx(2 ** SCORE_EXPONENT)
    assert by[3].reason == "sketch_mismatch" and by[3].weight == 0
    assert by[4].reason == "copycat" and by[4].verdict == "bad_problem" and "uid 2" in by[4].detail


def test_earlier_commit_wins_a_tie_by_uid():
    a, b = score_window([_outcome(5, [1], block=3), _outcome(2, [1], block=3)])
    assert (a.uid, a.unique_rollouts) == (2, 1)
    assert (b.uid, b.reason) == (5, "copycat")


@given(st.lists(st.integers(1, 60), min_size=2, max_size=6))
def test_splitting_work_over_hotkeys_never_pays(parts):
    rows = iter(range(10**6))
    split = score_window([_outcome(i, [next(rows) % 256 for _ in range(n)]) for i, n in enumerate(parts)])
    assert sum(s.score for s in split) <= (sum(parts)) ** SCORE_EXPONENT


@settings(max_examples=200)
@given(st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=40))
def test_normalize_u16_matches_the_bittensor_sdk(scores):
    import bittensor as bt

    ours = normalize_u16(scores)
    assert all(0 <= w <= U16_MAX for w in ours)
    if max(scores) > 0:
        assert max(ours) == U16_MAX
    uids, values = bt.intents.normalize(list(range(len(scores))), scores)
    assert {u: v for u, v in zip(uids, values)} == {u: w for u, w in enumerate(ours) if w}


def test_normalize_rejects_negative_and_nan():
    with pytest.raises(ValueError):
        normalize_u16([1.0, -1.0])
    with pytest.raises(ValueError):
        normalize_u16([float("nan")])


def test_verified_root_binds_uid_and_rows():
    o1 = MinerOutcome(1, "a", True, "ok", verified_rows=[b"\x01" * 32])
    o2 = MinerOutcome(2, "b", True, "ok", verified_rows=[b"\x02" * 32])
    assert verified_root([o1, o2]) == verified_root([o2, o1])
    o2_other_uid = MinerOutcome(3, "b", True, "ok", verified_rows=[b"\x02" * 32])
    assert verified_root([o1, o2]) != verified_root([o1, o2_other_uid])


window_rows = st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["hk-a", "hk-b"]), st.floats(0, 1e6)),
                       max_size=8).map(lambda rows: list({uid: (uid, hk, sc) for uid, hk, sc in rows}.values()))


@settings(max_examples=200)
@given(window_rows)
def test_one_window_combines_to_its_own_weights(rows):
    registered = {uid: hk for uid, hk, _ in rows}
    uids, weights = combine_windows([rows], registered)
    ordered = sorted(rows)
    assert uids == [u for u, _, _ in ordered]
    assert weights == normalize_u16([sc for _, _, sc in ordered])


@settings(max_examples=200)
@given(st.lists(window_rows, min_size=1, max_size=5), st.dictionaries(st.integers(0, 7), st.sampled_from(["hk-a", "hk-b"])))
def test_combined_weights_sum_scores_of_the_current_holder_only(windows, registered):
    uids, weights = combine_windows(windows, registered)
    totals = {}
    for rows in windows:
        for uid, hk, sc in rows:
            if registered.get(uid) == hk:
                totals[uid] = totals.get(uid, 0.0) + sc
    assert uids == sorted(totals)
    assert all(0 <= w <= U16_MAX for w in weights)
    if totals and max(totals.values()) > 0:
        best = max(totals, key=totals.get)
        assert weights[uids.index(best)] == U16_MAX
    # scores of a uid's earlier holder never count: a uid registered to nobody now gets no weight
    assert all(registered.get(u) is not None for u in uids)


def test_combined_weights_example():
    # uid 3 re-registered (hk-b now): its hk-a scores are dropped
    windows = [[(1, "hk-a", 10.0), (3, "hk-a", 50.0)], [(2, "hk-b", 10.0)], [(2, "hk-b", 10.0), (3, "hk-b", 5.0)]]
    assert combine_windows(windows, {1: "hk-a", 2: "hk-b", 3: "hk-b"}) == ([1, 2, 3], [32768, 65535, 16384])
