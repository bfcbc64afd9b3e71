"""A test-only environment in which the random-weight tiny model has reward variance (so the
trainer's loop has a gradient to follow): reward 1 when the completion text has an even number of
characters. It is registered only inside the tests that use it."""

from __future__ import annotations

import contextlib

from verification import environments
from verification.environments.base import REWARD_SCALE, Environment, Problem, SeededRandom
from verification.generation import GenerationParams


class ParityEnvironment(Environment):
    name = "test-parity"
    PARAM_RANGES = {"digits": (1, 6)}
    DEFAULT_PARAMS = {"digits": 2}

    def generate(self, seed, params):
        rnd = SeededRandom(seed, self.name)
        n = rnd.between(1, 10 ** params["digits"] - 1)
        return Problem(self.name, f"Say something about {n}.", n)

    def max_prompt_bytes(self, params):
        return len("Say something about .") + params["digits"]

    def reward(self, problem, completion):
        return REWARD_SCALE if len(completion) % 2 == 0 else 0

    def chance_reward(self, problem):
        return REWARD_SCALE / 2


PARITY_PARAMS = {"temperature_milli": 1000, "group_size": 4, "groups": 2, "max_new_tokens": 12,
                 "environments": [{"name": "test-parity", "weight": 1, "params": {"digits": 2}}]}


@contextlib.contextmanager
def parity_registered():
    environments.REGISTRY["test-parity"] = ParityEnvironment()
    try:
        yield GenerationParams.from_json(PARITY_PARAMS)
    finally:
        environments.REGISTRY.pop("test-parity", None)
