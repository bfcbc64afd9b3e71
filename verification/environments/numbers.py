"""The one number reader of every environment (docs/protocol.md section 8, "Numbers").

Every environment that reads a number from a completion reads it here, so one rule decides what a
number is:
  * digits are the ASCII digits 0-9 only. Other scripts' decimal digits (Arabic-Indic "٣",
    fullwidth "３", Devanagari "३", ...) are not digits: they are text like any letter, so "٣" holds
    no number and "5 ٣" ends in text, not in a number;
  * a comma joins digits only in groups of exactly three after the first group ("1,234" is 1234);
    any other comma separates numbers ("2,1" is the two numbers 2 and 1, "1,2345" is 1 and 2345);
    no other separator exists (a space, "_", "'", U+202F and "." between digit groups all separate);
  * a minus sign belongs to the number unless the character before the minus is an ASCII letter,
    digit or "_" ("= -5" is -5, "10-5" is 10 and 5); no "+" sign;
  * digits glued on the left to an ASCII letter, digit or "_" are not a number ("x5");
  * an optional fractional part (".", ASCII digits) makes the number an integer only when every
    fractional digit is 0 ("78.00" is 78, "78.5" is no integer).
Only the first READ_LIMIT characters of a completion are read.
"""

from __future__ import annotations

import re

READ_LIMIT = 4096  # characters (code points) of a completion any reward reads
DIGITS = "[0-9]"  # the only digits: ASCII (Python's \d would also match every Unicode Nd digit)

NUMBER = re.compile(r"(?<![0-9A-Za-z_])(-?)([0-9]+(?:,[0-9]{3})*(?![0-9]))(?:\.([0-9]+))?")
# What may follow the last number of a well-formed completion: whitespace and . ! * ) ] only.
_TAIL = re.compile(r"[\s.!*)\]]*")


def readable(completion: str) -> str:
    """The part of a completion that rewards read: its first READ_LIMIT characters."""
    return completion[:READ_LIMIT]


def parse_last_number(text: str) -> tuple[int | None, bool]:
    """(value of the last number in text[:READ_LIMIT] if it is an integer else None, well_formed).

    value: the digits without commas, negated after a minus sign; None when there is no number or
    the last one has a non-zero fractional digit.
    well_formed: some number exists and only whitespace and the characters . ! * ) ] follow the
    last one, so it stands at the end of the last non-empty line."""
    text = readable(text)
    last = None
    for last in NUMBER.finditer(text):
        pass
    if last is None:
        return None, False
    sign, digits, frac = last.groups()
    well_formed = _TAIL.fullmatch(text, last.end()) is not None
    if frac is not None and frac.strip("0"):
        return None, well_formed
    value = int(digits.replace(",", ""))
    return (-value if sign else value), well_formed
