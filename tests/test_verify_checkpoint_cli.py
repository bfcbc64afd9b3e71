"""`rollproof verify-checkpoint` end to end on the tiny model: the checkpoints of an honest local
network replay from the trainer's store and the exported ledger alone (exit 0); every checkpoint
of a dishonest trainer does not (exit 1, the failing event named); a ledger without the validator's
entries makes the replay fail, never pass."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rollproof.cli import app
from rollproof.localnet import run_localnet
from trainer.service import TrainerConfig

from trainer_env import parity_registered

pytestmark = [pytest.mark.slow, pytest.mark.replay]  # local networks and replays: minutes on 2 cores (README: the replay test command)

CONFIG = dict(heldout_problems=4, heldout_rollouts=2, gate_margin=1.0)


def _run(tmp_path_factory, name, **kw):
    from verification.model import load_model

    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        root = tmp_path_factory.mktemp(name)
        result = run_localnet(lm, root, n_groups=2, cheaters=False, trainer_config=TrainerConfig(**CONFIG), **kw)
    return root, result


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return _run(tmp_path_factory, "honest", windows=2)


@pytest.fixture(scope="module")
def dishonest(tmp_path_factory):
    return _run(tmp_path_factory, "dishonest", windows=1, dishonest_trainer="extra-row")


def _verify(root, fingerprint, *extra):
    with parity_registered():
        return CliRunner().invoke(app, ["verify-checkpoint", fingerprint, "--store", str(root / "store"),
                                        "--ledger-file", str(root / "ledger.jsonl"), "--model", "tiny",
                                        "--json", *extra])


def test_every_honest_checkpoint_replays_offline(honest):
    root, result = honest
    announced = [p for p in result.publications if p.stage == "announced"]
    assert len(announced) >= 2, [t.note for t in result.training]  # one per window (publish_every 1)
    assert result.ok, result.problems
    for pub in announced:
        assert result.replays[pub.fingerprint].startswith("replayed"), result.replays
    newest = announced[-1]  # its replay judges every parent first, from the store and the ledger alone
    out = _verify(root, newest.fingerprint)
    assert out.exit_code == 0, out.output
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["verdict"] == "replayed" and verdict["version"] == newest.version
    assert verdict["adapter_error"] <= 1e-3 and verdict["steps"] >= 1
    assert any("step applied" in line for line in verdict["lines"]), verdict["lines"]
    # every version of the lineage was replayed on the way
    assert verdict["replayed_versions"] == sorted(p.version for p in announced), verdict


def test_a_dishonest_trainers_checkpoint_does_not_replay(dishonest):
    root, result = dishonest
    announced = [p for p in result.publications if p.stage == "announced"]
    assert announced, [t.note for t in result.training]
    assert result.ok, result.problems  # the localnet's own expectation: every one void
    for pub in announced:
        assert result.replays[pub.fingerprint].startswith("void"), result.replays
    out = _verify(root, announced[0].fingerprint)
    assert out.exit_code == 1, out.output
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["verdict"] == "void" and verdict["reason"] == "replay_mismatch"
    assert "replayed adapter differs" in verdict["detail"] and verdict["step"] is not None


def test_without_the_validators_ledger_entries_nothing_replays(honest, tmp_path):
    root, result = honest
    empty = tmp_path / "ledger.jsonl"
    empty.write_text("")
    pub = next(p for p in result.publications if p.stage == "announced")
    with parity_registered():
        out = CliRunner().invoke(app, ["verify-checkpoint", pub.fingerprint, "--store", str(root / "store"),
                                       "--ledger-file", str(empty), "--model", "tiny", "--json"])
    assert out.exit_code == 1, out.output
    assert "no ledger entry" in json.loads(out.stdout.strip().splitlines()[-1])["detail"]
