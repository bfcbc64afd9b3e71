"""k-SAT with a planted solution. Reward 1.0 when the completion's assignment satisfies every clause."""

from __future__ import annotations

import re

from verification.environments.base import REWARD_SCALE, Environment, Problem, SeededRandom
from verification.environments.numbers import DIGITS, readable
from verification.errors import EnvironmentSpecError

# A variable index is 1-3 ASCII digits (the number rule of verification.environments.numbers: "x١"
# or "x１" names no variable).
_ASSIGN = re.compile(r"\bx(" + DIGITS + r"{1,3})\s*=\s*([01])\b")


class SatEnvironment(Environment):
    """Params: n drawn in [min_vars, max_vars]; m = max(2, n * clause_ratio_milli // 1000) clauses of
    k = min(k, n) distinct variables."""

    name = "sat"
    PARAM_RANGES = {"min_vars": (1, 10), "max_vars": (1, 10), "clause_ratio_milli": (100, 10_000), "k": (1, 5)}
    DEFAULT_PARAMS = {"min_vars": 3, "max_vars": 5, "clause_ratio_milli": 1600, "k": 3}

    def _check_relations(self, params) -> None:
        if params["min_vars"] > params["max_vars"]:
            raise EnvironmentSpecError("sat.min_vars must be <= sat.max_vars")

    def generate(self, seed: bytes, params) -> Problem:
        rnd = SeededRandom(seed, self.name)
        n = rnd.between(params["min_vars"], params["max_vars"])
        m = max(2, n * params["clause_ratio_milli"] // 1000)
        k = min(params["k"], n)
        planted = [rnd.below(2) for _ in range(n)]
        clauses = []
        for _ in range(m):
            variables: list[int] = []
            while len(variables) < k:
                v = rnd.below(n) + 1
                if v not in variables:
                    variables.append(v)
            clause = [v if rnd.below(2) else -v for v in variables]
            if not any((lit > 0) == bool(planted[abs(lit) - 1]) for lit in clause):
                i = rnd.below(k)
                clause[i] = -clause[i]
            clauses.append(tuple(clause))
        text = " AND ".join(
            "(" + " OR ".join(f"x{abs(l)}" if l > 0 else f"NOT x{abs(l)}" for l in c) + ")" for c in clauses
        )
        prompt = (
            f"Find values for x1..x{n} (each 0 or 1) that make this formula true:\n{text}\n"
            f"Answer with one line like: x1=0 x2=1 ..."
        )
        return Problem(self.name, prompt, {"n": n, "clauses": clauses})

    def max_prompt_bytes(self, params) -> int:
        """Every length grows with n, so the worst draw has n = max_vars and every literal negated."""
        n = params["max_vars"]
        m = max(2, n * params["clause_ratio_milli"] // 1000)
        k = min(params["k"], n)
        literal = len("NOT x") + len(str(n))
        clause = 2 + k * literal + (k - 1) * len(" OR ")
        text = m * clause + (m - 1) * len(" AND ")
        return len(f"Find values for x1..x{n} (each 0 or 1) that make this formula true:\n") + text + \
            len("\nAnswer with one line like: x1=0 x2=1 ...")

    def reward(self, problem: Problem, completion: str) -> int:
        n = problem.answer["n"]
        assignment: dict[int, int] = {}
        for var, val in _ASSIGN.findall(readable(completion)):
            v = int(var)
            if 1 <= v <= n and v not in assignment:
                assignment[v] = int(val)
        if len(assignment) != n:
            return 0
        ok = all(any((lit > 0) == bool(assignment[abs(lit)]) for lit in c) for c in problem.answer["clauses"])
        return REWARD_SCALE if ok else 0

    def chance_reward(self, problem: Problem) -> float:
        """Share of the 2^n assignments that satisfy every clause, times REWARD_SCALE."""
        n, clauses = problem.answer["n"], problem.answer["clauses"]
        good = 0
        for bits in range(1 << n):
            if all(any((lit > 0) == bool((bits >> (abs(lit) - 1)) & 1) for lit in c) for c in clauses):
                good += 1
        return REWARD_SCALE * good / (1 << n)
