"""Window scoring, u16 normalization, the verified-rollout root (the commitment codec: test_commitment_codec.py)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fractions import Fraction

from verification.constants import SCORE_EXPONENT, SCORE_SCALE, U16_MAX
from verification.scoring import MinerOutcome, combine_windows, normalize_u16, score_window, verified_root, window_score


def _outcome(uid, rows, ok=True, block=10, reason="ok", foreign=()):
    return MinerOutcome(uid, f"hk{uid}", ok, reason, "", block, [bytes([r]) * 32 for r in rows], [],
                        [bytes([r]) * 32 for r in foreign])


def test_accepted_bundles_keep_every_row_and_failed_ones_score_zero():
    scores = score_window([
        _outcome(0, [1, 2, 3, 4], block=10),
        _outcome(1, [1, 2, 3, 4], block=11),  # equal rows of two accepted bundles: both are own problems
        _outcome(2, [5, 6, 6], block=9),  # a group's two equal samples both count
        _outcome(3, [7, 8, 9], ok=False, reason="sketch_mismatch"),
        _outcome(4, [5, 6, 20], ok=False, block=3, reason="bad_problem", foreign=[5, 6]),  # committed first
    ])
    by = {s.uid: s for s in scores}
    assert by[0].credited_rollouts == 4 and by[0].weight == U16_MAX
    assert by[1].credited_rollouts == 4 and by[1].weight == U16_MAX and by[1].reason == "ok"
    assert by[2].score == 5196  # floor(1000 * 3 ** 1.5) = floor(5196.15...)
    assert by[3].reason == "sketch_mismatch" and by[3].weight == 0
    # the copier committed first and still holds nothing; the owner of the problems keeps its credit
    assert by[4].reason == "copycat" and by[4].verdict == "bad_problem" and "uid 2" in by[4].detail
    assert by[4].weight == 0 and by[4].credited_rollouts == 0


def test_only_rows_rejected_as_foreign_make_a_copycat():
    # a failed miner whose rows equal an accepted miner's by chance (same short answer to the same
    # prompt) but whose own problems are right keeps its real reason
    a, b = score_window([_outcome(1, [1, 2]), _outcome(2, [1, 2], ok=False, reason="sampling_mismatch")])
    assert (a.reason, b.reason) == ("ok", "sampling_mismatch")


outcome_sets = st.lists(
    st.tuples(st.booleans(), st.lists(st.integers(0, 40), max_size=12), st.integers(0, 30), st.booleans()),
    min_size=1, max_size=8)


@settings(max_examples=300)
@given(outcome_sets)
def test_credit_does_not_depend_on_commit_order_or_on_failed_miners(spec):
    outcomes = [_outcome(uid, rows, ok=ok, block=block, reason="ok" if ok else "bad_problem",
                         foreign=rows if steal else [])
                for uid, (ok, rows, block, steal) in enumerate(spec)]
    scores = {s.uid: s for s in score_window(outcomes)}
    reversed_blocks = {s.uid: s for s in score_window(
        [_outcome(o.uid, [d[0] for d in o.row_digests], ok=o.ok, block=100 - o.commit_block, reason=o.reason,
                  foreign=[d[0] for d in o.foreign_rows]) for o in outcomes])}
    survivors = {s.uid: s for s in score_window([o for o in outcomes if o.ok])}
    for o in outcomes:
        s = scores[o.uid]
        assert s.credited_rollouts == (len(o.row_digests) if o.ok else 0)
        assert s.score == (window_score(len(o.row_digests)) if o.ok else 0)
        assert (s.credited_rollouts, s.weight) == (reversed_blocks[o.uid].credited_rollouts, reversed_blocks[o.uid].weight)
        if o.ok:
            assert s.weight == survivors[o.uid].weight  # failed miners change no one's weight
        else:
            assert s.weight == 0


@given(st.lists(st.integers(1, 60), min_size=2, max_size=6))
def test_splitting_work_over_hotkeys_never_pays(parts):
    rows = iter(range(10**6))
    split = score_window([_outcome(i, [next(rows) % 256 for _ in range(n)]) for i, n in enumerate(parts)])
    assert sum(s.score for s in split) <= window_score(sum(parts))


@settings(max_examples=500)
@given(st.integers(0, 10**7))
def test_window_score_is_the_floor_of_scale_times_n_to_the_three_halves(n):
    s = window_score(n)
    # s <= 1000 n^1.5 < s + 1, squared: exact in integers
    assert s * s <= n ** 3 * SCORE_SCALE ** 2 < (s + 1) ** 2
    assert abs(s - SCORE_SCALE * n ** SCORE_EXPONENT) <= 1 + 1e-9 * SCORE_SCALE * n ** SCORE_EXPONENT


@settings(max_examples=300)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=40))
def test_normalize_u16_rounds_half_up_exactly_and_agrees_with_the_bittensor_sdk(scores):
    import bittensor as bt

    ours = normalize_u16(scores)
    top = max(scores)
    for s, w in zip(scores, ours):
        exact = Fraction(s * U16_MAX, top) if top else Fraction(0)
        assert w - Fraction(1, 2) <= exact < w + Fraction(1, 2)  # round half up
    if top > 0:
        assert max(ours) == U16_MAX
        # the SDK quantizes the same values in floats: equal but at exact ties of the rounding
        uids, values = bt.intents.normalize(list(range(len(scores))), [float(s) for s in scores])
        sdk = {u: v for u, v in zip(uids, values)}
        assert all(abs(sdk.get(u, 0) - w) <= 1 for u, w in enumerate(ours))


def test_normalize_u16_ties_round_up():
    assert normalize_u16([2, 1]) == [65535, 32768]  # 32767.5 rounds up
    assert normalize_u16([0, 0]) == [0, 0]
    assert normalize_u16([3.0, 1]) == [65535, 21845]  # integral floats from JSON are accepted


def test_normalize_rejects_negative_and_nan():
    for bad in ([1, -1], [float("nan")], [1.5], [True], ["3"]):
        with pytest.raises(ValueError):
            normalize_u16(bad)


def test_verified_root_binds_uid_and_rows():
    o1 = MinerOutcome(1, "a", True, "ok", verified_rows=[b"\x01" * 32])
    o2 = MinerOutcome(2, "b", True, "ok", verified_rows=[b"\x02" * 32])
    assert verified_root([o1, o2]) == verified_root([o2, o1])
    o2_other_uid = MinerOutcome(3, "b", True, "ok", verified_rows=[b"\x02" * 32])
    assert verified_root([o1, o2]) != verified_root([o1, o2_other_uid])


window_rows = st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["hk-a", "hk-b"]), st.integers(0, 10**9)),
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
                totals[uid] = totals.get(uid, 0) + sc
    assert uids == sorted(totals)
    assert all(0 <= w <= U16_MAX for w in weights)
    if totals and max(totals.values()) > 0:
        best = max(totals, key=totals.get)
        assert weights[uids.index(best)] == U16_MAX
    # scores of a uid's earlier holder never count: a uid registered to nobody now gets no weight
    assert all(registered.get(u) is not None for u in uids)


def test_combined_weights_example():
    # uid 3 re-registered (hk-b now): its hk-a scores are dropped
    windows = [[(1, "hk-a", 10), (3, "hk-a", 50)], [(2, "hk-b", 10)], [(2, "hk-b", 10), (3, "hk-b", 5)]]
    assert combine_windows(windows, {1: "hk-a", 2: "hk-b", 3: "hk-b"}) == ([1, 2, 3], [32768, 65535, 16384])
