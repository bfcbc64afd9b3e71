"""Environment interface: a problem generated deterministically from a seed, and a reward by rule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from verification.prf import prf, uniform_below, word_stream

REWARD_SCALE = 1_000_000  # rewards are integers in micro-units: 1.0 == 1_000_000


@dataclass(frozen=True)
class Problem:
    environment: str
    prompt: str
    answer: object  # environment-specific data needed to score; never shown to the model


class SeededRandom:
    """Integer draws from the protocol PRF, so problems are identical in any implementation."""

    def __init__(self, seed: bytes, environment: str):
        self._words: Iterator[int] = word_stream(prf("env", environment, seed))

    def below(self, n: int) -> int:
        return uniform_below(self._words, n)

    def between(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def choice(self, items):
        return items[self.below(len(items))]


class Environment(ABC):
    name: str

    @abstractmethod
    def generate(self, seed: bytes) -> Problem: ...

    @abstractmethod
    def reward(self, problem: Problem, completion: str) -> int:
        """Reward in micro-units, computed by rule from the completion text (never eval)."""
