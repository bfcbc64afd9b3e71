"""Library-backed environments: problems from reasoning-gym's generators, rewards by the protocol's
own rule (docs/protocol.md section 8, "Library-backed environments").

Derivation (normative) of the problem of problem seed `seed` under params `p`, for attempt a = 0, 1, ...
up to MAX_ATTEMPTS - 1:
    library_seed = u64be(PRF("rg-seed", environment name, seed, a)[:8]) >> 1   (an integer < 2^63)
    item = reasoning-gym dataset(config(p) + seed=library_seed, size=1)[0]     (index 0)
    the first attempt whose item answer is a decimal integer (-?[0-9]+) is the problem;
    none of MAX_ATTEMPTS: TaskLibraryError.
Both generators here compute their answers with Python integers, so attempt 0 always gives the
problem (the rule exists for the spec, and is tested with the real derivation); a generator that can
answer with a non-integer (decimal_chain_sum, gsm_symbolic template 27) is not pinned.
Prompt (exact bytes) = item question + " " + PROMPT_SUFFIX.
Reward: 1_000_000 when parse_last_number(completion) is an integer equal to the answer, else 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from verification.environments import library
from verification.environments.base import REWARD_SCALE, Environment, Problem
from verification.environments.numbers import parse_last_number
from verification.errors import EnvironmentSpecError, TaskLibraryError
from verification.prf import prf

PROMPT_SUFFIX = "Give the final answer as a number on the last line."
MAX_ATTEMPTS = 8
_INTEGER = re.compile(r"-?[0-9]+")


def library_seed(environment: str, seed: bytes, attempt: int) -> int:
    """The reasoning-gym seed of a problem seed's attempt: the first 8 bytes of
    PRF("rg-seed", environment, seed, attempt), big-endian, shifted right by one (u63)."""
    return int.from_bytes(prf("rg-seed", environment, seed, attempt)[:8], "big") >> 1


class LibraryEnvironment(Environment):
    """An environment whose items come from a pinned reasoning-gym dataset (module docstring).

    Subclasses name the dataset, fix the library config the integer params map to (`config`), bound
    the prompt (`max_prompt_bytes`) and the chance baseline (`answer_range`)."""

    dataset: str
    PROMPT_PREFIX: str

    def check_params(self, params: Mapping[str, int]) -> None:
        """Ranges and the prompt bound first, then the library pin (TaskLibraryError): both before
        any window, whenever generation params naming this environment are parsed."""
        super().check_params(params)
        library.generator(self.dataset)

    def _check_relations(self, params: Mapping[str, int]) -> None:
        for lo, hi in (("min_terms", "max_terms"), ("min_digits", "max_digits")):
            if params[lo] > params[hi]:
                raise EnvironmentSpecError(f"{self.name}.{lo} must be <= {self.name}.{hi}")

    def config(self, params: Mapping[str, int]) -> dict[str, object]:
        raise NotImplementedError

    def answer_range(self, params: Mapping[str, int]) -> tuple[int, int]:
        """(L, H): the least and greatest answer the params' draws can give (the chance baseline's range)."""
        raise NotImplementedError

    def harder(self, params: Mapping[str, int]) -> dict[str, int] | None:
        """Raise max_digits, then min_digits, then max_terms, then min_terms, each up to its range
        (min_* up to max_*), skipping a step whose prompts would not fit MAX_ENV_PROMPT_BYTES."""
        from verification.constants import MAX_ENV_PROMPT_BYTES

        for key, other in (("max_digits", None), ("min_digits", "max_digits"), ("max_terms", None),
                           ("min_terms", "max_terms")):
            bound = self.PARAM_RANGES[key][1] if other is None else params[other]
            if params[key] < bound:
                p = {**params, key: params[key] + 1}
                if self.max_prompt_bytes(p) <= MAX_ENV_PROMPT_BYTES:
                    return p
        return None

    def generate(self, seed: bytes, params: Mapping[str, int]) -> Problem:
        self.check_params(params)
        config = self.config(params)
        for attempt in range(MAX_ATTEMPTS):
            lseed = library_seed(self.name, seed, attempt)
            question, answer = library.item(self.dataset, config, lseed)
            if _INTEGER.fullmatch(answer):
                break
        else:
            raise TaskLibraryError(f"{self.name}: no integer answer in {MAX_ATTEMPTS} attempts for problem seed "
                                   f"{seed.hex()} (last answer {answer!r})")
        prompt = question + " " + PROMPT_SUFFIX
        if not question.startswith(self.PROMPT_PREFIX) or len(prompt.encode("utf-8")) > self.max_prompt_bytes(params):
            raise TaskLibraryError(f"{self.name}: reasoning-gym made a prompt outside the protocol's bound "
                                   f"({len(prompt.encode('utf-8'))} bytes, {prompt[:80]!r})")
        return Problem(self.name, prompt, {"answer": int(answer), "library_seed": lseed, "attempt": attempt,
                                           "question": question, "range": self.answer_range(params)})

    def reward(self, problem: Problem, completion: str) -> int:
        value, _ = parse_last_number(completion)  # well-formedness earns nothing
        return REWARD_SCALE if value is not None and value == problem.answer["answer"] else 0

    def chance_reward(self, problem: Problem) -> float:
        """A random answer uniform over the integers the params' widest draw can give: right with
        probability 1 / (H - L + 1), [L, H] = `answer_range(params)`."""
        lo, hi = problem.answer["range"]
        return REWARD_SCALE / (hi - lo + 1)


class ChainSumEnvironment(LibraryEnvironment):
    """reasoning-gym chain_sum: k terms of d digits joined by + and -, e.g.
    "State the final answer to the following arithmetic problem: 47 - 5 + 12 =".

    Params map to ChainSumConfig(min_terms, max_terms, min_digits, max_digits, allow_negation=False).
    The library draws k, then one digit count d for all terms, terms uniform in [10^(d-1), 10^d - 1]
    (d = 1: [0, 9]), then the operators; the answer is the left-to-right value (+ and - only, so
    standard precedence gives the same)."""

    name = "rg_chain_sum"
    dataset = "chain_sum"
    PROMPT_PREFIX = "State the final answer to the following arithmetic problem: "
    PARAM_RANGES = {"min_terms": (2, 20), "max_terms": (2, 20), "min_digits": (1, 18), "max_digits": (1, 18)}
    DEFAULT_PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}

    def config(self, params: Mapping[str, int]) -> dict[str, object]:
        return {"min_terms": params["min_terms"], "max_terms": params["max_terms"],
                "min_digits": params["min_digits"], "max_digits": params["max_digits"], "allow_negation": False}

    def max_prompt_bytes(self, params: Mapping[str, int]) -> int:
        """Prefix + k terms of d digits + (k - 1) operators " + " / " - " + " =" + " " + suffix at the
        greatest k and d (exact for that draw)."""
        k, d = params["max_terms"], params["max_digits"]
        return len(self.PROMPT_PREFIX) + k * d + (k - 1) * 3 + len(" =") + 1 + len(PROMPT_SUFFIX)

    def answer_range(self, params: Mapping[str, int]) -> tuple[int, int]:
        """k terms of at most d digits: from 0 - (k - 1)(10^d - 1) to k (10^d - 1)."""
        k, top = params["max_terms"], 10 ** params["max_digits"] - 1
        return -(k - 1) * top, k * top


class BasicArithmeticEnvironment(LibraryEnvironment):
    """reasoning-gym basic_arithmetic, its simple path: two terms and one of + - *, e.g.
    "Calculate 7 * 10.".

    Params map to BasicArithmeticDatasetConfig(min_terms, max_terms, min_digits, max_digits,
    operators=("+", "-", "*"), allow_parentheses=False, allow_negation=False). The library draws the
    terms uniform in [0, 10^d] (so "1 digit" includes 10), then the operator.
    Why two terms and no division (checked on 0.1.25): the simple path computes left to right, so with
    three terms "8 - 3 * 6" is answered 30, not -10; and for "/" it prints the drawn term but divides
    by another number ("4 / 1" is answered 2, "7 / 4" 28). The parenthesised path evaluates its answers
    with eval. With two terms and + - * the printed expression's value is the answer."""

    name = "rg_basic_arithmetic"
    dataset = "basic_arithmetic"
    PROMPT_PREFIX = "Calculate "
    PARAM_RANGES = {"min_terms": (2, 2), "max_terms": (2, 2), "min_digits": (1, 12), "max_digits": (1, 12)}
    DEFAULT_PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}

    def config(self, params: Mapping[str, int]) -> dict[str, object]:
        return {"min_terms": params["min_terms"], "max_terms": params["max_terms"], "min_digits": params["min_digits"],
                "max_digits": params["max_digits"], "operators": ("+", "-", "*"), "allow_parentheses": False,
                "allow_negation": False}

    def max_prompt_bytes(self, params: Mapping[str, int]) -> int:
        """"Calculate " + two terms of d + 1 digits (10^d) + " * " + "." + " " + suffix."""
        d = params["max_digits"] + 1
        return len(self.PROMPT_PREFIX) + 2 * d + 3 + len(".") + 1 + len(PROMPT_SUFFIX)

    def answer_range(self, params: Mapping[str, int]) -> tuple[int, int]:
        """Two terms in [0, 10^d]: from 0 - 10^d to 10^d * 10^d."""
        top = 10 ** params["max_digits"]
        return -top, top * top
