"""The signal controller (trainer/curriculum.py) and GenerationParams.easier."""

import pytest
from hypothesis import given, settings, strategies as st

from trainer.curriculum import CurriculumSettings, GroupOutcomes, decide
from verification.generation import GenerationParams

BASE = GenerationParams.from_json({
    "temperature_milli": 700, "group_size": 8, "groups": 8, "max_new_tokens": 24,
    "environments": [{"name": "add", "weight": 1, "params": {
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "format_credit_milli": 0}}]})

outcomes = st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(0, 200)).map(
    lambda t: GroupOutcomes(sum(t), t[0], t[1], t[2]))


@settings(max_examples=200, deadline=None)
@given(outcomes, st.floats(0.05, 1.0), st.integers(1, 50))
def test_decisions_follow_the_outcomes(o, target, min_groups):
    s = CurriculumSettings(target_signal=target, min_groups=min_groups)
    d = decide(BASE, o, s)
    if o.groups < min_groups or o.signal_rate >= target:
        assert d.change == "none" and d.params == BASE
    elif o.solved >= o.failed:
        assert d.change == "harder" and d.params == BASE.harder()
    else:
        assert d.change == "larger_groups"
        assert d.params.group_size == 16 and d.params.groups == 4
        assert d.params.environments == BASE.environments
    assert d.params == BASE or d.reason


def test_too_hard_at_the_largest_groups_steps_back_to_the_mastered_setting():
    s = CurriculumSettings()
    mixed = BASE.harder()
    assert len(mixed.environments) == 2
    big = GenerationParams.from_json({**mixed.to_json(), "group_size": 16, "groups": 4})
    d = decide(big, GroupOutcomes(20, 2, 1, 17), s)
    assert d.change == "easier"
    assert d.params.environments == mixed.environments[:1]
    assert d.params.group_size == 16
    # a single listed setting cannot get easier: no change
    single = GenerationParams.from_json({**BASE.to_json(), "group_size": 16, "groups": 4})
    assert decide(single, GroupOutcomes(20, 2, 1, 17), s).change == "none"


def test_easier_drops_each_environments_hardest_listed_setting():
    assert BASE.easier() is None
    assert BASE.harder().easier() == BASE
    two = BASE.harder().harder()
    assert two.easier().environments == two.environments[:1]


def test_settings_are_checked():
    with pytest.raises(ValueError):
        CurriculumSettings(target_signal=0.0)
    with pytest.raises(ValueError):
        CurriculumSettings(windows=0)
