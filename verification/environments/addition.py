"""Multi-term addition of integers of chosen digit counts: the learning zone of a small model.

Difficulty rises along three axes as the model improves: more terms, more digits, and less credit
for a merely well-formed answer. Rewards are read by rule with regular expressions, never eval.
"""

from __future__ import annotations

from collections.abc import Mapping

from verification.environments.base import REWARD_SCALE, Environment, Problem, SeededRandom
from verification.environments.numbers import READ_LIMIT, parse_last_number
from verification.errors import EnvironmentSpecError

PROMPT_SUFFIX = "Give the final answer as a number on the last line."

__all__ = ["READ_LIMIT", "AdditionEnvironment", "parse_last_number"]


class AdditionEnvironment(Environment):
    """Add k integers of chosen digit counts.

    Params (integers, inclusive ranges in PARAM_RANGES): min_terms <= max_terms, min_digits <=
    max_digits, format_credit_milli.

    Draw order (protocol; every draw is SeededRandom(seed, "add"), i.e. the u64 word stream of
    PRF("env", "add", seed), and between(lo, hi) = lo + uniform_below(words, hi - lo + 1), which
    consumes at least one word even when lo == hi):
        1. k = between(min_terms, max_terms)
        2. for i = 1..k, in order:  d_i = between(min_digits, max_digits)
                                    a_i = between(10^(d_i - 1), 10^d_i - 1)
    Nothing else is drawn.

    Prompt (exact bytes, terms in draw order, written in decimal without separators or signs):
        "Compute " + " + ".join(a_1..a_k) + ". Give the final answer as a number on the last line."
    e.g. "Compute 37 + 5. Give the final answer as a number on the last line."

    Reward of a completion (only its first 4096 characters are read; see verification.environments.numbers for
    what a number is and when a completion is well-formed):
        * 1_000_000                     when the last number is an integer equal to a_1 + ... + a_k;
        * format_credit_milli * 1_000   otherwise, when the completion is well-formed (its last
                                        number ends the last non-empty line, followed only by
                                        whitespace and . ! * ) ]);
        * 0                             otherwise (no number, or a wrong last number followed by
                                        other text).

    Chance baseline: a random well-formed answer is a line holding an integer drawn uniformly from
    [L, H], L = sum 10^(d_i - 1), H = sum (10^d_i - 1), the least and greatest sums of operands of the
    drawn digit counts; it is right with probability 1 / (H - L + 1)."""

    name = "add"
    PARAM_RANGES = {
        "min_terms": (2, 10),
        "max_terms": (2, 10),
        "min_digits": (1, 12),
        "max_digits": (1, 12),
        "format_credit_milli": (0, 500),
    }
    # the base model's learning zone (reports/learning_zone.md); raise max_digits, then min_digits, then terms
    DEFAULT_PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "format_credit_milli": 0}

    def harder(self, params: Mapping[str, int]) -> dict[str, int] | None:
        """Raise max_digits, then min_digits, then max_terms, then min_terms; then drop format credit."""
        p = dict(params)
        for key, bound in (("max_digits", 12), ("min_digits", p["max_digits"]), ("max_terms", 10),
                           ("min_terms", p["max_terms"])):
            if p[key] < bound:
                p[key] += 1
                return p
        if p["format_credit_milli"] > 0:
            p["format_credit_milli"] = 0
            return p
        return None

    def _check_relations(self, params: Mapping[str, int]) -> None:
        if params["min_terms"] > params["max_terms"]:
            raise EnvironmentSpecError("add.min_terms must be <= add.max_terms")
        if params["min_digits"] > params["max_digits"]:
            raise EnvironmentSpecError("add.min_digits must be <= add.max_digits")

    def max_prompt_bytes(self, params: Mapping[str, int]) -> int:
        k, d = params["max_terms"], params["max_digits"]
        return len("Compute ") + k * d + (k - 1) * len(" + ") + len(". ") + len(PROMPT_SUFFIX)

    def generate(self, seed: bytes, params: Mapping[str, int]) -> Problem:
        self.check_params(params)
        rnd = SeededRandom(seed, self.name)
        k = rnd.between(params["min_terms"], params["max_terms"])
        terms, lo, hi = [], 0, 0
        for _ in range(k):
            d = rnd.between(params["min_digits"], params["max_digits"])
            terms.append(rnd.between(10 ** (d - 1), 10**d - 1))
            lo += 10 ** (d - 1)
            hi += 10**d - 1
        prompt = "Compute " + " + ".join(str(a) for a in terms) + ". " + PROMPT_SUFFIX
        answer = {"terms": tuple(terms), "sum": sum(terms), "lo": lo, "hi": hi,
                  "format_credit": params["format_credit_milli"] * 1000}
        return Problem(self.name, prompt, answer)

    def reward(self, problem: Problem, completion: str) -> int:
        value, well_formed = parse_last_number(completion)
        if value is not None and value == problem.answer["sum"]:
            return REWARD_SCALE
        return problem.answer["format_credit"] if well_formed else 0

    def chance_reward(self, problem: Problem) -> float:
        """Expected reward of a well-formed answer uniform in [L, H] (class docstring)."""
        a = problem.answer
        p = 1.0 / (a["hi"] - a["lo"] + 1)
        return p * REWARD_SCALE + (1.0 - p) * a["format_credit"]
