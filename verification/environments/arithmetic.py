"""GSM-style word problems with exact integer answers. Reward 1.0 when the last number in the
completion (verification.environments.numbers: ASCII digits, the one rule of every environment) is
an integer equal to the answer; parsed with a regular expression, never evaluated."""

from __future__ import annotations

from verification.environments.base import REWARD_SCALE, Environment, Problem, SeededRandom
from verification.environments.numbers import parse_last_number

_NAMES = ["Ada", "Ben", "Chen", "Dana", "Eli", "Fatima", "Goro", "Hana"]
_ITEMS = ["apples", "marbles", "stamps", "books", "coins", "shells"]


class ArithmeticEnvironment(Environment):
    name = "arith"
    PARAM_RANGES: dict[str, tuple[int, int]] = {}
    DEFAULT_PARAMS: dict[str, int] = {}

    def max_prompt_bytes(self, params) -> int:
        """The longest template with the longest name and item and the widest numbers (a <= 40,
        b <= 9, c <= 12, a*b <= 360, d <= a)."""
        who, item = max(_NAMES, key=len), max(_ITEMS, key=len)
        texts = (f"{who} has 40 {item}. {who} buys 9 boxes with 12 {item} in each box, "
                 f"then gives away 40 {item}. How many {item} does {who} have now?",
                 f"{who} packs 360 {item} equally into 9 bags and then adds 12 more {item} "
                 f"to one bag. How many {item} are in that bag?",
                 "What is 40 times 9 plus 12?")
        return max(len(t) for t in texts) + len("\nGive the final answer as a number on the last line.")

    def generate(self, seed: bytes, params) -> Problem:
        rnd = SeededRandom(seed, self.name)
        who, item = rnd.choice(_NAMES), rnd.choice(_ITEMS)
        kind = rnd.below(3)
        a, b, c = rnd.between(2, 40), rnd.between(2, 9), rnd.between(2, 12)
        if kind == 0:
            d = rnd.between(0, a)
            text = (f"{who} has {a} {item}. {who} buys {b} boxes with {c} {item} in each box, "
                    f"then gives away {d} {item}. How many {item} does {who} have now?")
            answer = a + b * c - d
        elif kind == 1:
            text = (f"{who} packs {a * b} {item} equally into {b} bags and then adds {c} more {item} "
                    f"to one bag. How many {item} are in that bag?")
            answer = a + c
        else:
            text = f"What is {a} times {b} plus {c}?"
            answer = a * b + c
        prompt = f"{text}\nGive the final answer as a number on the last line."
        return Problem(self.name, prompt, answer)

    def reward(self, problem: Problem, completion: str) -> int:
        value, _ = parse_last_number(completion)  # well-formedness earns nothing here
        return REWARD_SCALE if value is not None and value == problem.answer else 0

    def chance_reward(self, problem: Problem) -> float:
        """A random well-formed answer: a uniform integer in [0, 2 * answer]."""
        return REWARD_SCALE / (2 * abs(problem.answer) + 1)
