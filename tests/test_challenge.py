from hypothesis import given
from hypothesis import strategies as st

from verification.challenge import (
    groups_to_check, opening_round, opening_seed, problem_round, window_deadline_block, window_of_block,
    window_seed, window_start_block,
)
from verification.constants import GROUPS_CHECKED_PER_MINER, OPENING_BUFFER_S, WINDOW_BLOCKS
from verification.drand import QUICKNET


@given(st.integers(QUICKNET.genesis_time, QUICKNET.genesis_time + 10**9))
def test_opening_round_is_emitted_strictly_after_deadline_plus_buffer(deadline_time):
    r = opening_round(QUICKNET, deadline_time)
    assert QUICKNET.time_of_round(r) > deadline_time + OPENING_BUFFER_S
    # and it is the first such round
    assert QUICKNET.time_of_round(r - 1) <= deadline_time + OPENING_BUFFER_S
    assert problem_round(QUICKNET, deadline_time) < r


@given(st.integers(0, 10**9))
def test_window_arithmetic(block):
    w = window_of_block(block)
    assert window_start_block(w) <= block < window_deadline_block(w)
    assert window_deadline_block(w) - window_start_block(w) == WINDOW_BLOCKS


@given(st.binary(min_size=32, max_size=32), st.integers(0, 200))
def test_groups_to_check(rand, n):
    seed = opening_seed(1, 5, rand)
    a = groups_to_check(seed, "hk-a", b"\x00" * 32, n)
    assert len(a) == min(n, GROUPS_CHECKED_PER_MINER) and len(set(a)) == len(a)
    assert a == groups_to_check(seed, "hk-a", b"\x00" * 32, n)


def test_seeds_depend_on_every_input():
    base = window_seed(1, 2, b"\x01" * 32, b"\x02" * 32)
    assert len({base, window_seed(2, 2, b"\x01" * 32, b"\x02" * 32), window_seed(1, 3, b"\x01" * 32, b"\x02" * 32),
                window_seed(1, 2, b"\x03" * 32, b"\x02" * 32), window_seed(1, 2, b"\x01" * 32, b"\x04" * 32)}) == 5
    picks = {tuple(groups_to_check(opening_seed(1, 2, bytes([i]) * 32), "hk", b"\x00" * 32, 64)) for i in range(20)}
    assert len(picks) > 15
