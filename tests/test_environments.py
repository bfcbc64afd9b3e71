from hypothesis import given, settings
from hypothesis import strategies as st

from verification import environments
from verification.environments import REWARD_SCALE, environment_for, problem_for
from verification.environments.arithmetic import ArithmeticEnvironment
from verification.environments.sat import SatEnvironment
from verification.errors import EnvironmentSpecError

import pytest


@given(st.binary(min_size=32, max_size=32))
def test_problems_are_deterministic(seed):
    a, b = problem_for(seed), problem_for(seed)
    assert a == b
    assert a.environment == environment_for(seed)


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_sat_planted_solution_scores_one(seed):
    env = SatEnvironment()
    p = env.generate(seed)
    n = p.answer["n"]
    # brute force a satisfying assignment (planted one guarantees existence)
    for mask in range(2 ** n):
        bits = [(mask >> i) & 1 for i in range(n)]
        if all(any((l > 0) == bool(bits[abs(l) - 1]) for l in c) for c in p.answer["clauses"]):
            text = " ".join(f"x{i + 1}={bits[i]}" for i in range(n))
            assert env.reward(p, "Sure: " + text) == REWARD_SCALE
            break
    else:
        raise AssertionError("planted instance is unsatisfiable")
    assert env.reward(p, "x1=1") == 0  # incomplete assignment


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_arith_exact_answer(seed):
    env = ArithmeticEnvironment()
    p = env.generate(seed)
    assert env.reward(p, f"Let me think.\n{p.answer}") == REWARD_SCALE
    assert env.reward(p, f"{p.answer}\nno wait, {p.answer + 1}") == 0
    assert env.reward(p, "no number here") == 0


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=32), st.text(max_size=300))
def test_rewards_never_crash_on_any_text(seed, text):
    p = problem_for(seed)
    r = environments.get(p.environment).reward(p, text)
    assert r in (0, REWARD_SCALE)


def test_registry():
    assert set(environments.REGISTRY) >= {"sat", "arith"}
    with pytest.raises(EnvironmentSpecError):
        environments.get("nope")
    with pytest.raises(EnvironmentSpecError):
        environments.register(SatEnvironment())
    kinds = {environment_for(bytes([i]) * 32) for i in range(40)}
    assert kinds == {"sat", "arith"}
