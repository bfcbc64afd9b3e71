"""GRPO group advantages in fixed point.

For integer rewards r_i (micro-units) of one group of n rollouts, in float64, summing left to right:
    x_i = r_i / 1e6;  mean = sum(x)/n;  std = sqrt(sum((x_i-mean)^2)/n)
    A_i = round_half_even( (x_i - mean) / (std + GRPO_EPS) * ADVANTAGE_SCALE )
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from verification.constants import ADVANTAGE_SCALE, GRPO_EPS
from verification.environments.base import REWARD_SCALE


def advantages(rewards: Sequence[int]) -> list[int]:
    if not rewards:
        return []
    xs = [r / REWARD_SCALE for r in rewards]
    n = len(xs)
    mean = 0.0
    for x in xs:
        mean += x
    mean /= n
    var = 0.0
    for x in xs:
        var += (x - mean) ** 2
    std = math.sqrt(var / n)
    return [round((x - mean) / (std + GRPO_EPS) * ADVANTAGE_SCALE) for x in xs]
