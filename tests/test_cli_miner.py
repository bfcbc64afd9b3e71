"""`rollproof miner run` on the embedded defaults produces a bundle `rollproof verify` accepts."""

import os
from pathlib import Path

from typer.testing import CliRunner

from rollproof.cli import app


def test_miner_run_then_verify(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["miner", "run", "--model", "tiny",
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
    """--chain-wait 0: at the first attempt (by default `run` waits: tests/test_cli_startup.py)."""
    from test_cli_walk import make_wallet

    make_wallet(tmp_path, "default", "default")
    out = CliRunner().invoke(app, ["validator", "run", "--rpc-url", "http://127.0.0.1:9", "--registry", "0x" + "00" * 20,
                                   "--ledger", "0x" + "00" * 20, "--model", "tiny", "--wallet.path", str(tmp_path),
                                   "--chain-wait", "0"])
    assert out.exit_code == 2
    assert out.output == "error: --rpc-url http://127.0.0.1:9: cannot connect: Connection refused\n"


def test_a_missing_wallet_is_reported_before_the_chain_is_waited_for(tmp_path):
    out = CliRunner().invoke(app, ["validator", "run", "--rpc-url", "http://127.0.0.1:9", "--registry", "0x" + "00" * 20,
                                   "--ledger", "0x" + "00" * 20, "--model", "tiny", "--wallet.path", str(tmp_path)])
    assert out.exit_code == 2
    assert out.output.startswith("error: cannot load hotkey default/default") and out.output.count("\n") == 1


# ---- a validator that cannot see any miner's work says why, once per window ----------------------

def _report(window, *miners):
    return {"window": window, "model_fingerprint": "ab" * 32,
            "miners": [{"uid": i, "reason": r, "detail": d, "location": loc} for i, (r, d, loc) in enumerate(miners)]}


def test_window_warning_names_the_file_root_when_every_bundle_is_outside_it():
    from rollproof.cli_validator import OUTSIDE_FILE_ROOTS, window_warning

    outside = ("fetch_failed", f"file:///srv/a.rpb is {OUTSIDE_FILE_ROOTS}", "file:///srv/a.rpb")
    warning = window_warning(_report(7, outside, outside), [Path("/data/store")], "tiny")
    assert warning.startswith("window 7: every miner's bundle (2) is outside --file-root (/data/store)")
    assert "--store" in warning and "\n" not in warning


def test_window_warning_names_the_model_when_every_bundle_names_another():
    from rollproof.cli_validator import window_warning

    wrong = ("wrong_model", "bundle names model 12…, required ab…", "file:///a")
    warning = window_warning(_report(3, wrong, wrong, wrong), [], "tiny:5")
    assert warning.startswith("window 3: every miner's bundle (3) names another model than this validator's "
                              "--model tiny:5 (fingerprint abababababababab…)")


def test_window_warning_stays_quiet_when_some_miner_passes_or_there_are_none():
    from rollproof.cli_validator import window_warning

    failed = ("fetch_failed", "cannot fetch http://x/: timed out", "http://x/")
    ok = ("ok", "", "file:///a")
    assert window_warning(_report(1), [], "tiny") is None
    assert window_warning(_report(1, failed, ok), [], "tiny") is None
    assert window_warning(_report(1, ("wrong_model", "", "a"), ("bad_token", "", "b")), [], "tiny") is None
    any_fetch = window_warning(_report(1, failed), [], "tiny")
    assert any_fetch.startswith("window 1: every miner's bundle (1) failed to fetch, e.g. uid 0: cannot fetch")


def test_a_validator_with_a_wrong_file_root_or_model_warns(tmp_path):
    """A miner and two validators as an operator runs them on an EVM chain (the embedded EVM served
    over HTTP JSON-RPC, a block a second mined by a thread as `anvil --block-time 1` would; its
    simulated clock starts an hour back so that 12 s blocks never run ahead of the wall clock the
    RPC nodes' local drand follows): one validator
    reads the wrong --file-root, the other loads the wrong --model; both finish the window with
    exit 0 (the scores are real: every miner failed), and both say why in one warning line."""
    import re
    import subprocess
    import sys
    import threading
    import time

    from eth_account import Account

    from adapters.chain.evm import EVMChain, EmbeddedEVM
    from rpc_server import EmbeddedRPCServer
    from test_cli_walk import make_wallet
    from verification.challenge import window_deadline_block

    server = EmbeddedRPCServer(EmbeddedEVM(start_time=int(time.time()) - 3600)).start()
    stop_mining = threading.Event()
    try:
        with server.lock:
            registry, ledger = EVMChain.deploy(server.evm.w3, server.evm.admin, 1)
        keys = {name: "0x" + Account.create().key.hex().removeprefix("0x") for name in ("miner", "validator")}
        for key in keys.values():
            with server.lock:
                server.evm.fund(Account.from_key(key).address)
        wallets = tmp_path / "wallets"
        for name in keys:
            make_wallet(wallets, name, "hk")
        chain = ["--rpc-url", server.url, "--registry", registry, "--ledger", ledger, "--wallet.path", str(wallets),
                 "--wallet.hotkey", "hk"]
        runner = CliRunner()
        for name in keys:  # a validator registers with `miner register` too
            out = runner.invoke(app, ["miner", "register", *chain, "--wallet.name", name, "--evm-key", keys[name]])
            assert out.exit_code == 0, out.output
        uid = int(re.search(r"has uid (\d+)", out.output).group(1))
        unpermitted = runner.invoke(app, ["validator", "run", *chain, "--wallet.name", "validator", "--model", "tiny",
                                          "--evm-key", keys["validator"], "--state-dir", str(tmp_path / "v0")])
        assert unpermitted.exit_code == 2, unpermitted.output  # at start, not after 10 ledger retries
        assert f"rollproof chain permit {uid}" in unpermitted.output.splitlines()[-1], unpermitted.output
        out = runner.invoke(app, ["chain", "permit", str(uid), "--rpc-url", server.url, "--registry", registry,
                                  "--ledger", ledger, "--admin-key", "0x" + "00" * 31 + "01"])
        assert out.exit_code == 0, out.output

        def produce():  # anvil --block-time 1
            while not stop_mining.wait(1.0):
                server.mine(1)

        threading.Thread(target=produce, daemon=True).start()
        store = tmp_path / "store"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLPROOF_")} | {"HOME": str(tmp_path)}
        miner = subprocess.run([sys.executable, "-m", "rollproof.cli", "miner", "run", *chain, "--wallet.name", "miner",
                                "--evm-key", keys["miner"], "--model", "tiny", "--windows", "2",
                                "--store", str(store), "--state-dir", str(tmp_path / "miner")],
                               capture_output=True, text=True, timeout=300, env=env)
        assert miner.returncode == 0, miner.stdout + miner.stderr
        committed = [int(w) for w in re.findall(r"window (\d+): committed", miner.stdout + miner.stderr)]
        assert committed, miner.stdout + miner.stderr
        window = max(committed)
        while server.head() < window_deadline_block(window) + 3:  # closed, and its opening round is out
            stop_mining.wait(0.1)
        stop_mining.set()  # the head stays in the next window: both validators score `window`

        validator = [*chain, "--wallet.name", "validator", "--evm-key", keys["validator"], "--windows", "1"]
        wrong_root = runner.invoke(app, ["validator", "run", *validator, "--model", "tiny",
                                         "--file-root", str(tmp_path / "elsewhere"),
                                         "--state-dir", str(tmp_path / "v1")])
        assert wrong_root.exit_code == 0, wrong_root.output
        lines = [line for line in wrong_root.output.splitlines() if line.startswith("warning:")]
        assert lines == [line for line in lines if f"window {window}: every miner's bundle (1) is outside "
                         f"--file-root ({tmp_path / 'elsewhere'})" in line] and len(lines) == 1, wrong_root.output

        wrong_model = runner.invoke(app, ["validator", "run", *validator, "--model", "tiny:5",
                                          "--file-root", str(store), "--state-dir", str(tmp_path / "v2")])
        assert wrong_model.exit_code == 0, wrong_model.output
        lines = [line for line in wrong_model.output.splitlines() if line.startswith("warning:")]
        assert len(lines) == 1 and (f"window {window}: every miner's bundle (1) names another model than this "
                                    f"validator's --model tiny:5") in lines[0], wrong_model.output
    finally:
        stop_mining.set()
        server.close()


def test_register_refuses_a_netuid_the_registry_does_not_hold_before_any_transaction(tmp_path):
    """Against a netuid-1 registry, `--netuid 5` is one error line (exit 2) and no transaction: the
    hotkey holds no uid and the EVM account sent nothing; `--netuid 1` then registers it."""
    import bittensor as bt
    from eth_account import Account

    from adapters.chain.evm import EVMChain
    from test_cli_walk import make_wallet, netuid_one_registry

    server, registry, ledger = netuid_one_registry()
    try:
        key = Account.create()
        with server.lock:
            server.evm.fund(key.address)
        make_wallet(tmp_path, "op", "hk")
        args = ["miner", "register", "--rpc-url", server.url, "--registry", registry, "--ledger", ledger,
                "--evm-key", "0x" + key.key.hex().removeprefix("0x"), "--wallet.path", str(tmp_path),
                "--wallet.name", "op", "--wallet.hotkey", "hk"]
        runner = CliRunner()
        refused = runner.invoke(app, [*args, "--netuid", "5"])
        assert refused.exit_code == 2, refused.output
        assert refused.output.count("\n") == 1 and refused.output.startswith(
            f"error: --netuid 5: the registry at {registry} holds netuid 1"), refused.output
        chain = EVMChain.connect(server.url, registry, ledger)
        hotkey = bt.Wallet(name="op", hotkey="hk", path=str(tmp_path)).hotkey.ss58_address
        assert chain.uid_of(hotkey) is None
        with server.lock:
            assert server.evm.w3.eth.get_transaction_count(key.address) == 0
        ok = runner.invoke(app, [*args, "--netuid", "1"])
        assert ok.exit_code == 0 and f"hotkey {hotkey} has uid 0 on netuid 1" in ok.output, ok.output
        assert chain.uid_of(hotkey) == 0
    finally:
        server.close()
