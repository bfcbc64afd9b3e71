import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification import environments
from verification.environments import REWARD_SCALE
from verification.environments.addition import AdditionEnvironment, parse_last_number
from verification.environments.base import SeededRandom
from verification.errors import EnvironmentSpecError

ENV = AdditionEnvironment()
SEEDS = st.binary(min_size=32, max_size=32)


@st.composite
def params(draw):
    lo_t = draw(st.integers(2, 10))
    lo_d = draw(st.integers(1, 12))
    return {"min_terms": lo_t, "max_terms": draw(st.integers(lo_t, 10)),
            "min_digits": lo_d, "max_digits": draw(st.integers(lo_d, 12)),
            "format_credit_milli": draw(st.integers(0, 500))}


def test_registered():
    assert environments.get("add") is environments.REGISTRY["add"]
    assert isinstance(environments.get("add"), AdditionEnvironment)
    ENV.check_params(ENV.DEFAULT_PARAMS)


@settings(max_examples=200)
@given(SEEDS, params())
def test_problems_are_determined_by_the_seed(seed, p):
    a, b = ENV.generate(seed, p), AdditionEnvironment().generate(seed, dict(p))
    assert a == b
    terms = a.answer["terms"]
    assert p["min_terms"] <= len(terms) <= p["max_terms"]
    assert all(p["min_digits"] <= len(str(t)) <= p["max_digits"] for t in terms)
    assert a.answer["sum"] == sum(terms)
    assert a.prompt == ("Compute " + " + ".join(map(str, terms))
                        + ". Give the final answer as a number on the last line.")
    # the format credit is read only by the reward: the same seed gives the same prompt under any credit
    assert ENV.generate(seed, {**p, "format_credit_milli": 500 - p["format_credit_milli"]}).prompt == a.prompt


def test_draw_order_is_the_documented_one():
    p = {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 3, "format_credit_milli": 0}
    for i in range(50):
        seed = bytes([i]) * 32
        rnd = SeededRandom(seed, "add")
        k = rnd.between(2, 4)
        expected = []
        for _ in range(k):
            d = rnd.between(1, 3)
            expected.append(rnd.between(10 ** (d - 1), 10**d - 1))
        assert ENV.generate(seed, p).answer["terms"] == tuple(expected)


def test_known_problem_bytes():
    # pins the protocol (v6 PRF prefix): a change to the draw order, the PRF or the template changes these bytes
    p = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "format_credit_milli": 0}
    assert ENV.generate(bytes(32), p).prompt == "Compute 6 + 37. Give the final answer as a number on the last line."
    p = {"min_terms": 2, "max_terms": 5, "min_digits": 1, "max_digits": 6, "format_credit_milli": 0}
    assert ENV.generate(b"\x01" * 32, p).prompt == (
        "Compute 4893 + 32827 + 14 + 3435. Give the final answer as a number on the last line.")


def test_different_seeds_differ():
    p = {**ENV.DEFAULT_PARAMS, "max_digits": 3}
    prompts = {ENV.generate(bytes([i]) * 32, p).prompt for i in range(64)}
    assert len(prompts) >= 60


_CORRECT_FORMS = [
    "{s}", "{s}.", "The answer is {s}.", "{e} = {s}", "Let me add: {e} = {s}\n", "Answer: **{s}**",
    "First {a} plus more.\nSo the total is {s}!", "({s})", "{e} = {s}\n\n", "= {s}.00", "{sc}",
]


def _sep(n: int) -> str:
    return f"{n:,}"


@settings(max_examples=200)
@given(SEEDS, params(), st.sampled_from(_CORRECT_FORMS))
def test_correct_answer_earns_full_reward(seed, p, form):
    pr = ENV.generate(seed, p)
    terms = pr.answer["terms"]
    text = form.format(s=pr.answer["sum"], e=" + ".join(map(str, terms)), a=terms[0], sc=_sep(pr.answer["sum"]))
    assert ENV.reward(pr, text) == REWARD_SCALE
    # text after the answer that holds no number does not change a correct answer
    assert ENV.reward(pr, text + " I hope this helps") == REWARD_SCALE


@settings(max_examples=200)
@given(SEEDS, params(), st.integers(1, 10**6))
def test_wrong_answers(seed, p, delta):
    pr = ENV.generate(seed, p)
    s, credit = pr.answer["sum"], p["format_credit_milli"] * 1000
    wrong = s + delta
    assert ENV.reward(pr, f"{wrong}") == credit  # well-formed, wrong
    assert ENV.reward(pr, f"The sum is {wrong}.\n") == credit
    assert ENV.reward(pr, f"{s}\nno wait, {wrong}") == credit  # the last number counts
    assert ENV.reward(pr, f"{wrong} apples in total") == 0  # wrong and not at the end of the last line
    assert ENV.reward(pr, f"{s}.5") == credit  # not an integer
    assert ENV.reward(pr, f"-{s}") == credit  # negative
    assert ENV.reward(pr, f"{s} + {wrong}") == credit
    assert ENV.reward(pr, "I don't know") == 0
    assert ENV.reward(pr, "") == 0
    assert ENV.reward(pr, f"x{s}") == 0  # glued to a letter: not a number
    # only the first 4096 characters are read
    assert ENV.reward(pr, "a" * 4096 + f"{s}") == 0
    assert ENV.reward(pr, "a" * 4000 + f" {s}") == REWARD_SCALE


@settings(max_examples=300)
@given(SEEDS, st.text(max_size=400))
def test_reward_never_raises_on_any_text(seed, text):
    pr = ENV.generate(seed, {**ENV.DEFAULT_PARAMS, "format_credit_milli": 100})
    assert ENV.reward(pr, text) in (0, 100_000, REWARD_SCALE)


@settings(max_examples=100)
@given(st.text(alphabet="0123456789,.- \n*x=+", max_size=200))
def test_parser_never_raises_on_number_like_text(text):
    value, well_formed = parse_last_number(text)
    assert value is None or isinstance(value, int)
    assert isinstance(well_formed, bool)


def test_parse_last_number_examples():
    assert parse_last_number("7 + 7 = 12, 7 + 7 = 14") == (14, True)
    assert parse_last_number("1,234 apples") == (1234, False)
    assert parse_last_number("10-3") == (3, True)
    assert parse_last_number("= -78") == (-78, True)
    assert parse_last_number("78.00") == (78, True)
    assert parse_last_number("78.5") == (None, True)
    assert parse_last_number("x1=0") == (0, True)
    assert parse_last_number("x1") == (None, False)
    assert parse_last_number("21 + 20 = 41\n\nThis is a classic") == (41, False)


@pytest.mark.parametrize("bad", [
    {"min_terms": 1},
    {"max_terms": 11},
    {"min_digits": 0},
    {"max_digits": 13},
    {"format_credit_milli": 501},
    {"format_credit_milli": -1},
    {"min_terms": 3, "max_terms": 2},
    {"min_digits": 3, "max_digits": 2},
    {"min_digits": True},
    {"max_digits": 2.0},
])
def test_params_out_of_range_are_refused(bad):
    p = {**ENV.DEFAULT_PARAMS, **bad}
    with pytest.raises(EnvironmentSpecError):
        ENV.check_params(p)
    with pytest.raises(EnvironmentSpecError):
        ENV.generate(bytes(32), p)


def test_missing_or_unknown_params_are_refused():
    with pytest.raises(EnvironmentSpecError):
        ENV.check_params({k: v for k, v in ENV.DEFAULT_PARAMS.items() if k != "min_terms"})
    with pytest.raises(EnvironmentSpecError):
        ENV.check_params({**ENV.DEFAULT_PARAMS, "carry": 1})


@pytest.mark.parametrize("p", [
    {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "format_credit_milli": 0},
    {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2, "format_credit_milli": 100},
    {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "format_credit_milli": 300},
])
def test_chance_reward_matches_random_well_formed_answers(p):
    rng = random.Random(7)
    for i in range(4):
        pr = ENV.generate(bytes([i + 1]) * 32, p)
        lo, hi = pr.answer["lo"], pr.answer["hi"]
        assert lo == sum(10 ** (len(str(t)) - 1) for t in pr.answer["terms"])
        assert hi == sum(10 ** len(str(t)) - 1 for t in pr.answer["terms"])
        n = 4000
        total = sum(ENV.reward(pr, f"The answer is\n{rng.randint(lo, hi)}") for _ in range(n))
        expected = ENV.chance_reward(pr)
        # binomial standard error of the hit rate, with a 5-sigma band
        q = 1 / (hi - lo + 1)
        sigma = (REWARD_SCALE - p["format_credit_milli"] * 1000) * (q * (1 - q) / n) ** 0.5
        assert abs(total / n - expected) <= 5 * sigma + 1e-6
        assert expected < 0.1 * REWARD_SCALE + p["format_credit_milli"] * 1000


def test_curriculum_raises_digits_then_terms():
    from verification.constants import BASE_GENERATION
    from verification.generation import GenerationParams

    params = GenerationParams.from_json(BASE_GENERATION)
    seen, previous = [], None
    while params is not None and len(seen) < 40:
        hardest = params.environments[-1].params_dict
        if previous is not None:
            # the mastered setting stays beside the next one, at the same weight
            assert [e.params_dict for e in params.environments] == [previous, hardest]
            assert params.environments[0].weight == params.environments[1].weight
        seen.append(hardest)
        previous = hardest
        params = params.harder()
    assert seen[0]["max_digits"] == 2 and seen[0]["min_digits"] == 1  # the base: 1-2 digit terms
    assert seen[1]["max_digits"] == 3 and seen[1]["min_digits"] == 1
    assert all(AdditionEnvironment().check_params(p) is None for p in seen)
    assert seen[-1]["max_terms"] == seen[-1]["min_terms"] == 10 and seen[-1]["min_digits"] == 12
    assert params is None  # the last setting has no harder one


def test_a_curriculum_mix_draws_both_settings_and_refuses_a_repeated_one():
    from verification import environments
    from verification.constants import BASE_GENERATION
    from verification.errors import EnvironmentSpecError
    from verification.generation import GenerationParams
    from verification.prf import prf

    mixed = GenerationParams.from_json(BASE_GENERATION).harder()
    seeds = [prf("mix-test", i) for i in range(400)]
    chosen = [mixed.environment_for(s) for s in seeds]
    easy = sum(1 for c in chosen if c == mixed.environments[0])
    assert 150 <= easy <= 250  # equal weights: about half of the problems at each setting
    his = {environments.problem_for(s, mixed)[1].answer["hi"] for s in seeds}
    # largest sums of two terms of 1-3 digits: 1-3 digit terms occur only in the harder setting
    assert his == {18, 108, 198, 1008, 1098, 1998}
    twice = {**BASE_GENERATION, "environments": BASE_GENERATION["environments"] * 2}
    with pytest.raises(EnvironmentSpecError, match="twice"):
        GenerationParams.from_json(twice)
