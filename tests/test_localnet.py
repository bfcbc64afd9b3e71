"""The one-command local network: honest miners weighted, every cheater at zero for its reason,
the chain holds weights and ledger, the offline audit agrees with the validator."""

from typer.testing import CliRunner

from rollproof.cli import app
from rollproof.localnet import run_localnet

EXPECTED = {
    "model swap": {"sketch_mismatch"},
    "edited tokens": {"sketch_mismatch", "sampling_mismatch"},
    "copycat": {"copycat"},
    "replay": {"wrong_window"},
}


def test_localnet_outcome(tiny, tmp_path):
    result = run_localnet(tiny, tmp_path, windows=1, n_groups=1)
    assert result.ok, result.problems
    (window,) = result.windows
    for m in window.report["miners"]:
        name, kind = result.names[m["uid"]]
        if kind == "honest":
            assert m["reason"] == "ok" and m["weight"] > 0
        else:
            assert m["weight"] == 0 and m["reason"] in EXPECTED[kind], (name, m["reason"])
    assert set(result.chain_weights.values()) == {0, 65535}
    assert result.ledger[-1]["report_hash"] == window.report_hash
    assert all(a["agrees"] for a in result.audits)
    assert not list(tmp_path.rglob("*.tmp"))


def test_localnet_command_exit_code(tmp_path):
    out = CliRunner().invoke(app, ["localnet", "--model", "tiny", "--windows", "1", "--groups", "1",
                                   "--workdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "every cheater at zero" in out.output
    assert "ScoreLedger: window" in out.output
