"""The one number rule of every environment (verification/environments/numbers.py, docs/protocol.md
section 8): ASCII digits only, comma groups of exactly three, a minus that does not follow a word
character, and the same reading in add, arith and sat."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification.environments import REWARD_SCALE
from verification.environments.addition import AdditionEnvironment
from verification.environments.arithmetic import ArithmeticEnvironment
from verification.environments.base import Problem
from verification.environments.numbers import READ_LIMIT, parse_last_number
from verification.environments.sat import SatEnvironment

ADD, ARITH, SAT = AdditionEnvironment(), ArithmeticEnvironment(), SatEnvironment()
INTS = st.integers(-10**30, 10**30)
# every Unicode decimal digit (category Nd) that is not ASCII: Arabic-Indic, fullwidth, Devanagari, ...
NON_ASCII_DIGITS = st.characters(whitelist_categories=("Nd",)).filter(lambda c: not "0" <= c <= "9")
TAIL = st.text(alphabet=" \n\t.!*)]", max_size=5)


def _add_problem(answer: int) -> Problem:
    return Problem("add", "", {"sum": answer, "format_credit": 100_000})


@given(INTS, TAIL)
def test_every_int_round_trips_plain_and_with_thousands_commas(n, tail):
    assert parse_last_number(f"{n}{tail}") == (n, True)
    assert parse_last_number(f"{n:,}{tail}") == (n, True)
    assert parse_last_number(f"the answer is {n}.000{tail}") == (n, True)
    assert parse_last_number(f"{n + 7} then {n}") == (n, True)  # the last number counts


@given(INTS)
def test_add_and_arith_read_the_same_number(n):
    for text in (f"{n}", f"{n:,}", f"= {n}.", f"{n} apples", f"x{n}", f"{n}.5"):
        value, well_formed = parse_last_number(text)
        arith = ARITH.reward(Problem("arith", "", n), text)
        add = ADD.reward(_add_problem(n), text)
        assert arith == (REWARD_SCALE if value == n else 0)
        assert add == (REWARD_SCALE if value == n else 100_000 if well_formed else 0)


@settings(max_examples=200)
@given(st.integers(0, 10**12), st.lists(NON_ASCII_DIGITS, min_size=1, max_size=4))
def test_non_ascii_digits_are_text_in_every_environment(n, digits):
    """A number written in another script's digits is no number: no reward, and it ends the text as
    text (so the ASCII number before it is not at the end)."""
    foreign = "".join(digits)
    assert parse_last_number(foreign) == (None, False)
    assert parse_last_number(f"{n} {foreign}") == (n, False)
    assert ARITH.reward(Problem("arith", "", n), foreign) == 0


@given(st.integers(0, 10**9))
def test_a_number_in_arabic_indic_or_fullwidth_digits_is_refused(n):
    arabic = "".join(chr(0x0660 + int(c)) for c in str(n))
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in str(n))
    for text in (arabic, fullwidth, f"= {arabic}", f"{fullwidth}."):
        assert parse_last_number(text) == (None, False)
        assert ARITH.reward(Problem("arith", "", n), text) == 0
        assert ADD.reward(_add_problem(n), text) == 0


@pytest.mark.parametrize("text, expected", [
    ("2,1", (1, True)),            # a comma not followed by exactly three digits separates numbers
    ("1,2345", (2345, True)),
    ("12, 823", (823, True)),
    ("12,823", (12823, True)),
    ("1 234", (234, True)),        # no other separator: space, "_", "'", U+202F
    ("1_234", (1, False)),         # "234" is glued to "_": no number; "_234" follows the 1
    ("1'234", (234, True)),
    ("1\u202f234", (234, True)),
    ("\u0663", (None, False)),     # Arabic-Indic three
    ("\uff13", (None, False)),     # fullwidth three
    ("\u0969", (None, False)),     # Devanagari three
    ("x5", (None, False)),
    ("10-5", (5, True)),
    ("= -5", (-5, True)),
    ("+5", (5, True)),             # no plus sign: "+" is text before the number
    ("78.00", (78, True)),
    ("78.5", (None, True)),
    ("5\u0663", (5, False)),       # a non-ASCII digit after the number is text
])
def test_the_documented_examples(text, expected):
    assert parse_last_number(text) == expected


@given(INTS)
def test_only_the_first_read_limit_characters_are_read(n):
    assert parse_last_number("a" * READ_LIMIT + f" {n}") == (None, False)
    assert parse_last_number(" " * (READ_LIMIT - len(str(n)) - 1) + f" {n}") == (n, True)


def test_sat_variable_indices_are_ascii_digits_only():
    p = Problem("sat", "", {"n": 1, "clauses": ((1,),)})
    assert SAT.reward(p, "x1=1") == REWARD_SCALE
    assert SAT.reward(p, "x\u0661=1") == 0  # Arabic-Indic one names no variable
    assert SAT.reward(p, "x\uff11=1") == 0  # fullwidth one neither
    assert SAT.reward(p, "x001=1") == REWARD_SCALE


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_the_parser_never_raises_and_returns_an_int_or_none(text):
    value, well_formed = parse_last_number(text)
    assert value is None or type(value) is int
    assert isinstance(well_formed, bool)
    assert value is None or well_formed or any("0" <= c <= "9" for c in text)
