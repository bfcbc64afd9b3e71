"""The pure helpers of scripts/replay_tolerance.py (the script itself runs a local network for
minutes; its figures are in reports/replay_tolerance_*.md and docs/security.md section 8)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from trainer.heldout import gate_withholds
from verification.environments.base import REWARD_SCALE

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "replay_tolerance.py"


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("replay_tolerance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["replay_tolerance"] = module
    spec.loader.exec_module(module)
    return module


F = REWARD_SCALE


def test_flips_to_pass_counts_the_misreported_rollouts(rt):
    parent = [F] * 6 + [0] * 4  # mean 0.6 (5 problems x 2 rollouts)
    candidate = [F] * 2 + [0] * 8  # mean 0.2
    assert rt.flips_to_pass(parent, parent, 2, 0.0) == 0  # passes already
    k = rt.flips_to_pass(parent, candidate, 2, 0.0)
    assert k == 2  # raise 2 candidate rollouts (0.4) and lower 2 parent ones (0.4)
    # k is the fewest: k - 1 misreported rollouts per model still fail the gate
    c, p = list(candidate), list(parent)
    c[2] = F
    p[0] = 0
    assert gate_withholds(p, c, 2, 0.0)
    assert rt.flips_to_pass(parent, candidate, 2, 0.1) == 2
    assert rt.flips_to_pass(parent, candidate, 2, 0.2) == 1


def test_flips_to_pass_none_when_no_misreport_passes(rt):
    assert rt.flips_to_pass([F, F], [0, 0], 2, -1.5) is None


def test_gate_shift(rt):
    assert rt.gate_shift(2, 96) == pytest.approx(4 / 96)
    assert rt.gate_shift(0, 96) == 0.0


def test_recommend(rt):
    r = rt.recommend(1e-7, 1e-1, current=1e-3)
    assert r["separates"] and r["current_ok"]
    assert r["recommended"] == pytest.approx(1e-4)
    assert r["ratio"] == pytest.approx(1e6)
    bad = rt.recommend(1e-2, 1e-3)
    assert not bad["separates"] and bad["recommended"] is None and not bad["current_ok"]
    assert not rt.recommend(1e-7, 1e-4, current=1e-3)["current_ok"]  # the current value above the dishonest


def test_summary_and_fmt(rt):
    assert rt.summary([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert all(math.isnan(x) for x in rt.summary([]))
    assert rt.fmt(0.0) == "0" and rt.fmt(math.inf) == "inf" and rt.fmt(1.23456e-5) == "1.23e-05"


def test_ledger_from_events(rt):
    events = [{"validator_uid": 3, "window": 10, "uids": [1, 2], "scores": [5, 6], "verified_root": b"r" * 32,
               "report_hash": b"h" * 32, "block": 77}]
    ledger = rt.ledger_from_events(events)
    e = ledger(3, 10)
    assert (e.validator_uid, e.window, e.uids, e.scores, e.report_hash, e.block) == (3, 10, (1, 2), (5, 6),
                                                                                       b"h" * 32, 77)
    assert ledger(3, 11) is None and ledger(4, 10) is None


def test_fabricated_row_is_not_a_sent_row(rt):
    import numpy as np

    from trainer.step import TrainingRow

    rows = [TrainingRow((1, 2), (3, 4, 5), np.array([-0.1, -0.2, -0.3], dtype=np.float32), 0.5),
            TrainingRow((1, 2), (6, 7), np.array([-0.4, -0.5], dtype=np.float32), -1.5)]
    f = rt.fabricated_row(rows)
    assert f.completion == (5, 4, 3) and f.advantage == 1.5
    assert list(f.behaviour_logprobs) == pytest.approx([-0.3, -0.2, -0.1])
