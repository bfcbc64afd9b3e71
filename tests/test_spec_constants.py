"""docs/protocol.md appendix A against verification/constants.py: every public constant of the module
is a row of the table with the module's value, and every name the table lists is a constant whose
value is the one written, so the document cannot drift from the code again."""

import json
import re
from pathlib import Path

import pytest

import verification.announcement as announcement
import verification.constants as constants

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
# constants the table lists that live beside the code deriving them rather than in constants.py
ELSEWHERE = {"MAX_ANNOUNCEMENT_BASE_BYTES": announcement}


def _appendix_a() -> str:
    start, end = PROTOCOL.index("## Appendix A."), PROTOCOL.index("## Appendix B.")
    return PROTOCOL[start:end]


def _table_rows() -> dict[str, str]:
    """{constant name: the written value} from appendix A's table. A row may name several constants
    (`A`, `B` | 1, 2) with one value each, in order."""
    rows: dict[str, str] = {}
    for line in _appendix_a().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        values = [v.strip() for v in cells[1].split(",")] if len(names) > 1 else [cells[1]]
        assert len(values) == len(names), f"appendix A row {line!r}: {len(names)} names, {len(values)} values"
        for name, value in zip(names, values):
            assert name not in rows, f"appendix A lists {name} twice"
            rows[name] = value
    return rows


def _public_constants() -> dict[str, object]:
    return {n: v for n, v in vars(constants).items() if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}


def _matches(written: str, value) -> bool:
    """The written cell states `value`: an integer in decimal, a float (any decimal form), bytes and
    strings as their ASCII text (newline as \\n) in backticks, a dict as a pointer to the section that spells
    it out (checked there). A parenthetical remark may follow the value."""
    text = re.sub(r"\s*\(.*\)$", "", written).strip()
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return text == str(value)
    if isinstance(value, float):
        try:
            return float(text) == value
        except ValueError:
            return False
    if isinstance(value, bytes):
        return text == "`" + value.decode("ascii").replace("\n", "\\n") + "`"
    if isinstance(value, str):
        return text == "`" + value + "`"
    if isinstance(value, dict):
        return re.fullmatch(r"section \d+", text) is not None
    return False


def test_every_constant_is_in_appendix_a_with_its_value():
    rows = _table_rows()
    missing = sorted((set(_public_constants()) | set(ELSEWHERE)) - set(rows))
    assert not missing, f"docs/protocol.md appendix A lacks {missing}"
    for name, value in (_public_constants() | {n: getattr(m, n) for n, m in ELSEWHERE.items()}).items():
        assert _matches(rows[name], value), f"appendix A gives {name} as {rows[name]!r}, the code has {value!r}"


def test_every_name_in_appendix_a_is_a_constant_with_that_value():
    known = _public_constants() | {n: getattr(m, n) for n, m in ELSEWHERE.items()}
    for name, written in _table_rows().items():
        assert name in known, f"appendix A lists {name}, which is no constant of verification/"
        assert _matches(written, known[name]), f"appendix A gives {name} as {written!r}, the code has {known[name]!r}"


def test_dict_constants_are_spelled_out_where_the_table_points():
    rows = _table_rows()
    for name, value in _public_constants().items():
        if isinstance(value, dict):
            section = re.sub(r"\s*\(.*\)$", "", rows[name]).split()[-1]
            start = PROTOCOL.index(f"\n## {section}. ")
            end = PROTOCOL.index("\n## ", start + 1)
            assert json.dumps(value) in PROTOCOL[start:end], f"section {section} does not spell out {name}"


@pytest.mark.parametrize("written, value, ok", [
    ("20", 20, True), ("21", 20, False), ("1e-3", 1e-3, True), ("0.001", 1e-3, True), ("2e-3", 1e-3, False),
    ("`rc3`", b"rc3", True), ("`.rpb`", ".rpb", True), (".rpb", ".rpb", False), ("rc3", b"rc3", False), ("`RPROOF1\\n`", b"RPROOF1\n", True),
    ("67108864 (64 MiB)", 64 * 1024 * 1024, True), ("64 MiB", 64 * 1024 * 1024, False), ("True", True, False),
])
def test_the_value_reader(written, value, ok):
    assert _matches(written, value) is ok
