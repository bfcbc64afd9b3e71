"""The replay re-runs the gate's greedy measure where the record holds it (trainer/replay.py,
docs/protocol.md section 16): the recorded greedy results may differ from the replayed ones in at
most GATE_REPLAY_FLIPS problems per model, and the recorded stage must be the gate's decision on
the recorded values, sampled and greedy. Real evaluations of the tiny model on the parity
environment; parent and candidate are the same model, so the sampled gate passes and the greedy
results alone decide."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trainer.policy import LoraSettings
from trainer.record import ReplaySettings
from trainer.replay import HeldoutCache, _replay_gate
from trainer.step import TrainConfig
from verification.constants import GATE_REPLAY_FLIPS, GREEDY_GATE_MIN_DROP
from verification.errors import ReplayMismatchError
from verification.training_record import CandidateEvent

from trainer_env import parity_registered


def test_the_replayed_gate_decides_on_the_recorded_greedy_results():
    from verification.model import load_model

    settings = ReplaySettings(LoraSettings(), TrainConfig(), 1, 3, 4, 1, 0.1, None, True)
    record = SimpleNamespace(netuid=1)
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        cache = HeldoutCache()
        rewards = tuple(cache.rewards(lm, params, record.netuid, settings))
        greedy = cache.greedy(lm, params, record.netuid, settings)
        assert len(greedy) == 4 and set(greedy) <= {0, 1}
        assert 1 in greedy and 0 in greedy, greedy  # measured: the base answers some of these greedily
        k, z = greedy.index(1), greedy.index(0)
        one_off = greedy[:k] + [0] + greedy[k + 1:]  # 0.25 lower, one problem: more than a 0.1 margin
        raised = greedy[:z] + [1] + greedy[z + 1:]  # a parent recorded one problem better than replayed
        assert GATE_REPLAY_FLIPS >= 1 and GREEDY_GATE_MIN_DROP == 2

        def gate(stage, candidate_greedy, parent_greedy=greedy):
            event = CandidateEvent(1, stage, params, rewards, rewards, "00" * 32, tuple(parent_greedy),
                                   tuple(candidate_greedy))
            return _replay_gate(0, event, record, settings, lm, lm, cache, lambda line: None)

        # a net drop of 2 problems (0.5 > the margin), each record one flip from the replay: withheld
        # by the greedy measure alone, it replays
        assert gate("withheld", one_off, raised) == 1
        assert gate("announced", greedy) == 0
        # one problem lower is below the margin but not GREEDY_GATE_MIN_DROP problems: the gate passes
        assert gate("announced", one_off) == 1
        with pytest.raises(ReplayMismatchError, match="pass the gate"):
            gate("withheld", one_off)  # a single argmax flip is not the gate's withhold
        with pytest.raises(ReplayMismatchError, match="pass the gate"):
            gate("withheld", greedy)  # nothing fails: a withheld stage is not the gate's decision
        with pytest.raises(ReplayMismatchError, match="fail the gate"):
            gate("announced", one_off, raised)  # an announced candidate whose recorded greedy accuracy falls
        with pytest.raises(ReplayMismatchError, match="greedy results recorded differ"):
            gate("announced", [1 - g for g in greedy])  # more flips than the tolerance
        with pytest.raises(ReplayMismatchError, match="greedy results, the settings give 4"):
            gate("announced", greedy[:3], greedy[:3])
