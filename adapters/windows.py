"""Building a WindowContext from the chain and a beacon source: the one place miner and validator
turn "window w" into the public randomness of that window."""

from __future__ import annotations

from adapters.beacons import BeaconCache, BeaconSource
from adapters.chain.base import BlockInfo, Chain
from verification.challenge import opening_round, problem_round, window_deadline_block, window_start_block
from verification.errors import WindowBeforeBeaconError
from verification.window import WindowContext


def window_context(chain: Chain, beacons: BeaconSource, window: int, cache: BeaconCache | None = None) -> WindowContext:
    start: BlockInfo = chain.block(window_start_block(window))
    rnd = problem_round(beacons.info, start.timestamp)
    if rnd < 1:
        raise WindowBeforeBeaconError(
            f"window {window} starts at block {start.number} with time {start.timestamp}, before the drand "
            f"chain's genesis {beacons.info.genesis_time}: no beacon round pins its problems, skip it")
    beacon = beacons.get(rnd, cache)
    return WindowContext(chain.netuid, window, start.hash, start.timestamp, beacon)


def opening_randomness(chain: Chain, beacons: BeaconSource, window: int, cache: BeaconCache | None = None):
    """(round, verified beacon) that opens window: the first round after deadline + buffer.
    Raises BeaconUnavailableError until that round is emitted, ChainError until the deadline block exists."""
    deadline = chain.block(window_deadline_block(window))
    rnd = opening_round(beacons.info, deadline.timestamp)
    return rnd, beacons.get(rnd, cache)
