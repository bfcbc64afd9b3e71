from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification import environments
from verification.constants import BASE_GENERATION
from verification.environments import REWARD_SCALE, problem_for
from verification.environments.arithmetic import ArithmeticEnvironment
from verification.environments.sat import SatEnvironment
from verification.errors import EnvironmentSpecError
from verification.generation import GenerationParams

SAT = SatEnvironment()
SAT_PARAMS = SatEnvironment.DEFAULT_PARAMS
BASE = GenerationParams.from_json(BASE_GENERATION)


def _mix(*weights):
    return GenerationParams.from_json({
        "temperature_milli": 1000, "group_size": 4, "groups": 8, "max_new_tokens": 96,
        "environments": [{"name": "sat", "weight": weights[0], "params": dict(SAT_PARAMS)},
                         {"name": "arith", "weight": weights[1], "params": {}}]})


@given(st.binary(min_size=32, max_size=32))
def test_problems_are_deterministic(seed):
    (name_a, a), (name_b, b) = problem_for(seed, BASE), problem_for(seed, BASE)
    assert a == b and name_a == name_b == a.environment
    assert name_a == BASE.environment_for(seed).name


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_sat_planted_solution_scores_one(seed):
    p = SAT.generate(seed, SAT_PARAMS)
    n = p.answer["n"]
    # brute force a satisfying assignment (planted one guarantees existence)
    for mask in range(2 ** n):
        bits = [(mask >> i) & 1 for i in range(n)]
        if all(any((l > 0) == bool(bits[abs(l) - 1]) for l in c) for c in p.answer["clauses"]):
            text = " ".join(f"x{i + 1}={bits[i]}" for i in range(n))
            assert SAT.reward(p, "Sure: " + text) == REWARD_SCALE
            break
    else:
        raise AssertionError("planted instance is unsatisfiable")
    assert SAT.reward(p, "x1=1") == 0  # incomplete assignment
    assert 0 < SAT.chance_reward(p) <= REWARD_SCALE  # the planted assignment is among the 2^n


@settings(max_examples=60)
@given(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=4), st.binary(min_size=32, max_size=32))
def test_sat_params_shape_the_instance(lo, extra, seed):
    hi = min(10, lo + extra)
    params = {"min_vars": lo, "max_vars": hi, "clause_ratio_milli": 2000, "k": 2}
    p = SAT.generate(seed, params)
    assert lo <= p.answer["n"] <= hi
    assert len(p.answer["clauses"]) == max(2, p.answer["n"] * 2)


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_arith_exact_answer(seed):
    env = ArithmeticEnvironment()
    p = env.generate(seed, {})
    assert env.reward(p, f"Let me think.\n{p.answer}") == REWARD_SCALE
    assert env.reward(p, f"{p.answer}\nno wait, {p.answer + 1}") == 0
    assert env.reward(p, "no number here") == 0


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=32), st.text(max_size=300))
def test_rewards_never_crash_on_any_text(seed, text):
    name, p = problem_for(seed, BASE)
    r = environments.get(name).reward(p, text)
    assert 0 <= r <= REWARD_SCALE


def test_registry_and_params_are_checked():
    assert set(environments.REGISTRY) >= {"sat", "arith"}
    with pytest.raises(EnvironmentSpecError):
        environments.get("nope")
    with pytest.raises(EnvironmentSpecError):
        SAT.check_params({**SAT_PARAMS, "min_vars": 6, "max_vars": 5})
    with pytest.raises(EnvironmentSpecError):
        SAT.check_params({**SAT_PARAMS, "extra": 1})
    with pytest.raises(EnvironmentSpecError):
        SAT.check_params({**SAT_PARAMS, "k": 99})


def test_mix_follows_the_weights():
    counts = Counter(_mix(3, 1).environment_for(bytes([i % 256, i // 256]) * 16).name for i in range(2000))
    assert 0.70 < counts["sat"] / 2000 < 0.80  # expected 0.75
    assert set(_mix(1, 1).environment_for(bytes([i]) * 32).name for i in range(40)) == {"sat", "arith"}


@pytest.mark.parametrize("bad", [
    {"temperature_milli": 0},
    {"group_size": 1},
    {"groups": 0},  # a bundle of no groups is never what a checkpoint asks for
    {"groups": 257},
    {"groups": True},
    {"max_new_tokens": 10**6},
    {"environments": []},
    {"environments": [{"name": "nope", "weight": 1, "params": {}}]},
    {"environments": [{"name": "arith", "weight": 0, "params": {}}]},
    {"environments": [{"name": "arith", "weight": 1, "params": {}}, {"name": "arith", "weight": 1, "params": {}}]},
    {"temperature_milli": True},
    {"extra": 1},
])
def test_generation_params_are_range_checked(bad):
    with pytest.raises(EnvironmentSpecError):
        GenerationParams.from_json({**BASE_GENERATION, **bad})


@settings(max_examples=50)
@given(st.integers(100, 2000), st.integers(2, 64), st.integers(1, 256), st.integers(1, 512), st.integers(1, 1000))
def test_generation_params_round_trip(t, g, n, m, w):
    obj = {"temperature_milli": t, "group_size": g, "groups": n, "max_new_tokens": m,
           "environments": [{"name": "arith", "weight": w, "params": {}}]}
    assert GenerationParams.from_json(obj).to_json() == obj


@st.composite
def env_params(draw):
    """Any in-range params of any environment (relations min <= max kept)."""
    env = draw(st.sampled_from(sorted(environments.REGISTRY)))
    e = environments.get(env)
    p = {k: draw(st.integers(lo, hi)) for k, (lo, hi) in e.PARAM_RANGES.items()}
    for lo_key, hi_key in (("min_vars", "max_vars"), ("min_terms", "max_terms"), ("min_digits", "max_digits")):
        if lo_key in p and p[lo_key] > p[hi_key]:
            p[lo_key], p[hi_key] = p[hi_key], p[lo_key]
    return env, p


@settings(max_examples=300)
@given(env_params(), st.binary(min_size=32, max_size=32))
def test_every_prompt_fits_its_environments_bound(spec, seed):
    env, params = spec
    e = environments.get(env)
    bound = e.max_prompt_bytes(params)
    try:
        e.check_params(params)
    except EnvironmentSpecError as exc:
        assert bound > 448 and "MAX_ENV_PROMPT_BYTES" in str(exc)
    else:
        assert bound <= 448
    try:
        prompt = e.generate(seed, params).prompt
    except EnvironmentSpecError as exc:  # add and the rg_* environments check their params when generating
        assert bound > 448 and "MAX_ENV_PROMPT_BYTES" in str(exc) and env != "sat"
    else:
        assert len(prompt.encode()) <= bound


def test_the_prompt_bound_is_reached_and_refuses_oversized_mixes():
    sat = environments.get("sat")
    worst = {"min_vars": 5, "max_vars": 5, "clause_ratio_milli": 1600, "k": 3}
    # every draw stays within the bound, and the bound is tight to within the negations a draw skips
    lengths = [len(sat.generate(bytes([i]) * 32, worst).prompt) for i in range(200)]
    assert max(lengths) <= sat.max_prompt_bytes(worst) < max(lengths) + 30
    big = {"min_vars": 10, "max_vars": 10, "clause_ratio_milli": 10_000, "k": 5}
    with pytest.raises(EnvironmentSpecError, match="MAX_ENV_PROMPT_BYTES"):
        GenerationParams.from_json({**BASE_GENERATION, "environments": [{"name": "sat", "weight": 1, "params": big}]})
    # the base generation params all pass
    GenerationParams.from_json(BASE_GENERATION)


def test_groups_is_required_and_with_groups_is_range_checked():
    """Generation params fix the groups of every bundle (issue 24 item 5): the field is required,
    and with_groups keeps everything else (a new fingerprint, the same problems)."""
    from verification.constants import MAX_GROUPS, MAX_GROUPS_PER_BUNDLE, MIN_GROUPS

    assert MIN_GROUPS >= 1 and MAX_GROUPS <= MAX_GROUPS_PER_BUNDLE
    without = {k: v for k, v in BASE_GENERATION.items() if k != "groups"}
    with pytest.raises(EnvironmentSpecError, match="groups"):
        GenerationParams.from_json(without)
    three = BASE.with_groups(3)
    assert three.groups == 3 and three.to_json() == {**BASE.to_json(), "groups": 3}
    for bad in (MIN_GROUPS - 1, MAX_GROUPS + 1):
        with pytest.raises(EnvironmentSpecError, match=r"groups must be an integer in \[1, 256\]"):
            BASE.with_groups(bad)
    # the curriculum (the trainer's next checkpoints) carries the group count forward
    harder = three.harder()
    assert harder is not None and harder.groups == 3 and harder.environments != three.environments
