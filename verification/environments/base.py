"""Environment interface: a problem generated deterministically from a seed, and a reward by rule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from verification.constants import MAX_ENV_PROMPT_BYTES
from verification.errors import EnvironmentSpecError
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
    """An environment: problems from (seed, difficulty params), rewards by rule.

    `params` are the environment's difficulty parameters from the checkpoint's generation params
    (integers only). PARAM_RANGES names every parameter with its inclusive range; check_params
    refuses a missing, unknown or out-of-range one."""

    name: str
    PARAM_RANGES: dict[str, tuple[int, int]] = {}
    DEFAULT_PARAMS: dict[str, int] = {}

    def check_params(self, params: Mapping[str, int]) -> None:
        if set(params) != set(self.PARAM_RANGES):
            raise EnvironmentSpecError(f"environment {self.name!r} takes exactly the params "
                                       f"{sorted(self.PARAM_RANGES)}, got {sorted(params)}")
        for key, (lo, hi) in self.PARAM_RANGES.items():
            v = params[key]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise EnvironmentSpecError(f"{self.name}.{key} must be an integer in [{lo}, {hi}], got {v!r}")
        self._check_relations(params)
        longest = self.max_prompt_bytes(params)
        if longest > MAX_ENV_PROMPT_BYTES:
            raise EnvironmentSpecError(
                f"{self.name} params {dict(sorted(params.items()))} allow prompts of {longest} UTF-8 bytes, more "
                f"than MAX_ENV_PROMPT_BYTES = {MAX_ENV_PROMPT_BYTES} (the prompt would not fit MAX_PROMPT_TOKENS)")

    def _check_relations(self, params: Mapping[str, int]) -> None:
        """Constraints between params (e.g. min <= max); raise EnvironmentSpecError."""

    @abstractmethod
    def max_prompt_bytes(self, params: Mapping[str, int]) -> int:
        """The greatest UTF-8 length of a prompt these params can generate (an upper bound that is
        exact for the worst draw); check_params refuses params whose bound exceeds MAX_ENV_PROMPT_BYTES."""

    def harder(self, params: Mapping[str, int]) -> dict[str, int] | None:
        """The next step of this environment's curriculum (None: no harder setting). Not consensus:
        the trainer proposes params in a checkpoint's manifest, and they bind only through it."""
        return None

    @abstractmethod
    def generate(self, seed: bytes, params: Mapping[str, int]) -> Problem: ...

    @abstractmethod
    def reward(self, problem: Problem, completion: str) -> int:
        """Reward in micro-units, computed by rule from the completion text (never eval)."""

    @abstractmethod
    def chance_reward(self, problem: Problem) -> float:
        """Expected reward (micro-units) of a uniformly random well-formed answer: the chance
        baseline a learning curve is compared with."""
