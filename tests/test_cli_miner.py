"""`rollproof miner run` on the embedded defaults produces a bundle `rollproof verify` accepts."""

from typer.testing import CliRunner

from rollproof.cli import app


def test_miner_run_then_verify(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["miner", "run", "--model", "tiny", "--groups", "1",
                              "--store", str(tmp_path / "store"), "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 0, out.output
    bundles = list((tmp_path / "store").rglob("*.rpb"))
    assert len(bundles) == 1
    ok = runner.invoke(app, ["verify", str(bundles[0]), "--model", "tiny"])
    assert ok.exit_code == 0, ok.output
    assert "ACCEPTED" in ok.output
    wrong_model = runner.invoke(app, ["verify", str(bundles[0]), "--model", "tiny:5"])
    assert wrong_model.exit_code == 1 and "wrong_model" in wrong_model.output


def test_miner_register_needs_a_wallet_off_the_embedded_chain(tmp_path):
    out = CliRunner().invoke(app, ["miner", "register", "--network", "ws://127.0.0.1:9",
                                   "--wallet.path", str(tmp_path), "--wallet.name", "nobody"])
    assert out.exit_code == 2
    assert "cannot load hotkey" in out.output


def test_validator_run_reports_an_unreachable_rpc(tmp_path):
    out = CliRunner().invoke(app, ["validator", "run", "--rpc-url", "http://127.0.0.1:9", "--registry", "0x" + "00" * 20,
                                   "--ledger", "0x" + "00" * 20, "--model", "tiny", "--wallet.path", str(tmp_path)])
    assert out.exit_code == 2
    assert "cannot load hotkey" in out.output or "cannot reach" in out.output
