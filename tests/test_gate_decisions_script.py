"""scripts/gate_decisions.py on the training record of the vectors (tests/vectors/training.json):
its two candidate events re-decided under the margin-only greedy rule and the current one."""

import json
from pathlib import Path

import pytest

from trainer.record import settings_from_json
from verification.constants import GREEDY_GATE_MIN_DROP
from verification.training_record import CandidateEvent, parse_training_record

from script_loader import load_script

ROOT = Path(__file__).resolve().parent.parent


def _script():
    return load_script("gate_decisions")


def _run_dir(tmp_path: Path, record_bytes: bytes, journal: dict | None = None) -> Path:
    published = tmp_path / "run-0" / "trainer" / "published"
    published.mkdir(parents=True)
    (published / "2.training.json").write_bytes(record_bytes)
    if journal is not None:
        (published / f"{journal['version']}.json").write_text(json.dumps(journal))
    return tmp_path / "run-0"


def test_the_vectors_record_is_re_decided_by_both_rules(tmp_path):
    script = _script()
    vec = json.loads((ROOT / "tests" / "vectors" / "training.json").read_text())
    data = vec["record_canonical_json"].encode()
    record = parse_training_record(data)
    events = [e for e in record.events if isinstance(e, CandidateEvent)]
    settings = settings_from_json(record.settings)
    margin = settings.gate_margin
    # a candidate withheld after the last announcement: in the journal only, one greedy problem down
    journal = {"version": 3, "stage": "withheld", "heldout": 0.5, "parent_heldout": 0.5, "greedy": 4 / 8,
               "parent_greedy": 5 / 8}
    rows = script.decisions(_run_dir(tmp_path, data, journal), settings.heldout_rollouts, margin)
    assert [r["version"] for r in rows] == [e.version for e in events] + [3]
    for row, event in zip(rows, events):
        assert row["recorded"] == event.stage and row["source"] == "record"
        # the vectors' candidates were made under the rule in force: both rules reproduce their stage
        assert row["current"] == row["margin_only"] == (event.stage == "withheld")
        assert row["parent_solved"] == sum(event.parent_greedy)
    last = rows[-1]
    assert (last["source"], last["parent_solved"], last["candidate_solved"], last["problems"]) == ("journal", 5, 4, 8)
    assert last["margin_only"] and not last["current"]  # a one-problem drop: withheld only by the margin alone
    assert GREEDY_GATE_MIN_DROP == 2


def test_a_directory_without_a_trainer_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        _script().main([str(tmp_path), "--out", str(tmp_path)])
    assert stopped.value.code == 2 and "holds no trainer/published" in capsys.readouterr().err
