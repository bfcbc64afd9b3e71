"""Challenge derivation: what a miner must work on, and what a validator opens.

Problem side (known to everyone once the window opens, to no one before):
    window_seed  = PRF("window", netuid, window, block_hash(window start), beacon_randomness(R_p))
    problem_seed = PRF("problem", window_seed, hotkey, group_index)
    R_p          = round_at(block_time(window start))
Opening side (known only after the upload deadline):
    R_o          = round_at(deadline_time + OPENING_BUFFER_S) + 1
    opening_seed = PRF("open", netuid, window, beacon_randomness(R_o))
    checked groups of a miner = sample_distinct(PRF("open-groups", opening_seed, hotkey, rows_root),
                                                n_groups, GROUPS_CHECKED_PER_MINER)
"""

from __future__ import annotations

from verification.constants import GROUPS_CHECKED_PER_MINER, OPENING_BUFFER_S, WINDOW_BLOCKS
from verification.drand import ChainInfo
from verification.prf import prf, sample_distinct


def window_of_block(block: int) -> int:
    return block // WINDOW_BLOCKS


def window_start_block(window: int) -> int:
    return window * WINDOW_BLOCKS


def window_deadline_block(window: int) -> int:
    """Commitments must land in a block strictly before this one (the next window's start)."""
    return (window + 1) * WINDOW_BLOCKS


def problem_round(info: ChainInfo, window_start_time: int) -> int:
    """The drand round pinned to a window: the round current at the window's first block."""
    return info.round_at(window_start_time)


def opening_round(info: ChainInfo, deadline_time: int) -> int:
    """First round emitted strictly after deadline_time + OPENING_BUFFER_S."""
    return info.round_at(deadline_time + OPENING_BUFFER_S) + 1


def window_seed(netuid: int, window: int, block_hash: bytes, beacon_randomness: bytes) -> bytes:
    if len(block_hash) != 32 or len(beacon_randomness) != 32:
        raise ValueError("block hash and beacon randomness must be 32 bytes")
    return prf("window", netuid, window, block_hash, beacon_randomness)


def problem_seed(window_seed_: bytes, hotkey: str, group_index: int) -> bytes:
    return prf("problem", window_seed_, hotkey, group_index)


def sketch_key(window_seed_: bytes) -> bytes:
    return prf("sketch", window_seed_)


def opening_seed(netuid: int, window: int, opening_randomness: bytes) -> bytes:
    return prf("open", netuid, window, opening_randomness)


def groups_to_check(opening_seed_: bytes, hotkey: str, rows_root: bytes, n_groups: int,
                    k: int = GROUPS_CHECKED_PER_MINER) -> list[int]:
    return sample_distinct(prf("open-groups", opening_seed_, hotkey, rows_root), n_groups, k)
