"""Greedy decoding (trainer/greedy.py) and the greedy held-out measure (trainer/heldout.py)."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trainer.greedy import greedy_completions
from trainer.heldout import evaluate_greedy, evaluation_seeds, greedy_withholds, heldout_seeds, paired_difference
from verification import environments
from verification.constants import GREEDY_GATE_MIN_DROP
from verification.environments.base import REWARD_SCALE
from verification.model import load_model


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny")


def _argmax_loop(lm, prompt, n):
    """Reference: argmax over a full forward pass of prompt + tokens so far, one token at a time."""
    ids, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
        tok = int(logits.float().argmax())
        out.append(tok)
        ids.append(tok)
        if tok in lm.eos_ids:
            break
    return out


def test_greedy_matches_a_full_forward_argmax_and_ignores_batching(lm):
    prompts = [lm.chat_prompt_ids(t) for t in ("Compute 3 + 4.", "Compute 12 + 30. Give the answer.", "Hi")]
    batched = greedy_completions(lm, prompts, 6, batch_size=3)
    single = [greedy_completions(lm, [p], 6, batch_size=1)[0] for p in prompts]
    assert batched == single
    for p, got in zip(prompts, single):
        assert got == _argmax_loop(lm, p, 6)
        assert 1 <= len(got) <= 6


def test_greedy_refuses_bad_arguments(lm):
    with pytest.raises(ValueError):
        greedy_completions(lm, [[1, 2]], 0)
    with pytest.raises(ValueError):
        greedy_completions(lm, [[]], 3)


def test_evaluate_greedy_scores_each_problem_by_the_environment_rule(lm):
    seeds = evaluation_seeds(7, 5, "add")
    res = evaluate_greedy(lm, lm.generation, seeds, batch_size=2)
    assert len(res.correct) == len(res.completions) == 5
    for seed, ok, text in zip(seeds, res.correct, res.completions):
        name, problem = environments.problem_for(seed, lm.generation)
        assert ok == (environments.get(name).reward(problem, text) == REWARD_SCALE)
    chance = np.mean([environments.get(n).chance_reward(p) / REWARD_SCALE
                      for n, p in (environments.problem_for(s, lm.generation) for s in seeds)])
    assert res.chance == pytest.approx(chance)
    assert paired_difference(res, res).mean == 0.0


def test_evaluation_seeds_are_disjoint_from_the_gate_and_per_task():
    ev = set(evaluation_seeds(1, 200, "add")) | set(evaluation_seeds(1, 200, "transfer"))
    assert len(ev) == 400
    assert not ev & set(heldout_seeds(1, 200))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=64),
       st.sampled_from([0.0, 0.02, 0.1, 0.3]))
def test_greedy_gate_withholds_on_a_drop_of_min_drop_problems_beyond_the_margin(pairs, margin):
    """The greedy gate (docs/protocol.md section 16): withheld exactly when the candidate solves at
    least GREEDY_GATE_MIN_DROP fewer problems than the parent and its accuracy is lower by more than
    the margin; counted here from the pairs, independently of the implementation's float means."""
    parent, candidate = [p for p, _ in pairs], [c for _, c in pairs]
    drop = sum(parent) - sum(candidate)
    assume(abs(drop - margin * len(pairs)) > 1e-6)  # an exact tie with the margin is float64's to decide
    expected = drop >= GREEDY_GATE_MIN_DROP and drop > margin * len(pairs)
    assert greedy_withholds(parent, candidate, margin) == expected
    # symmetric in which problems flip: only the counts matter
    assert greedy_withholds(sorted(parent), sorted(candidate), margin) == expected


def test_a_single_greedy_flip_never_withholds():
    for n in (4, 32, 48, 200):
        parent = [1] * n
        assert not greedy_withholds(parent, [0] + [1] * (n - 1), 0.0)
        assert greedy_withholds(parent, [0, 0] + [1] * (n - 2), 0.0)
