"""A node's start (rollproof/startup.py) as an operator meets it: `miner run` and `validator run`
against the embedded EVM served over HTTP JSON-RPC (tests/rpc_server.py).

- A permanent refusal (unregistered hotkey, no validator permit, an EVM key that does not own the
  uid) is one `error:` line and exit code 2, before the model is loaded (a spy on load_model
  records every call) and before anything is generated (the store stays empty).
- An unreachable RPC is waited for by default, with one log line when it is found down and one
  when it answers; --chain-wait bounds the wait; an endpoint that answers but serves no rollproof
  contracts is not an outage and fails at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollproof.cli import app
from rpc_server import EmbeddedRPCServer, TCPProxy
from test_cli_walk import dead_port, make_wallet

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # wall-clock bound on the subprocess test (a hang fails it, nothing is timed)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The served chain, its contract addresses, and wallets: `miner` registered with its own EVM
    key, `validator` registered without a permit, `stranger` unregistered; each has a funded key."""
    from eth_account import Account

    from adapters.chain.evm import EVMChain, EmbeddedEVM

    tmp = tmp_path_factory.mktemp("startup")
    server = EmbeddedRPCServer(EmbeddedEVM()).start()
    with server.lock:
        registry, ledger = EVMChain.deploy(server.evm.w3, server.evm.admin, 1)
    keys = {}
    for name in ("miner", "validator", "stranger", "other"):
        make_wallet(tmp / "wallets", name, "hk")
        keys[name] = "0x" + Account.create().key.hex().removeprefix("0x")
        with server.lock:
            server.evm.fund(Account.from_key(keys[name]).address)
    chain = ("--rpc-url", server.url, "--registry", registry, "--ledger", ledger,
             "--wallet.path", str(tmp / "wallets"), "--wallet.hotkey", "hk")
    for name in ("miner", "validator"):
        out = CliRunner().invoke(app, ["miner", "register", *chain, "--wallet.name", name, "--evm-key", keys[name]])
        assert out.exit_code == 0, out.output
    yield {"server": server, "registry": registry, "ledger": ledger, "keys": keys, "chain": chain, "tmp": tmp}
    server.close()


@pytest.fixture()
def model_loads(monkeypatch):
    """Every load_model call the command makes (the real function still runs)."""
    import verification.model

    calls, real = [], verification.model.load_model

    def spy(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(verification.model, "load_model", spy)
    return calls


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


REFUSALS = {
    "miner, unregistered": ("miner", "stranger", "stranger", "is not registered on netuid 1"),
    "validator, unregistered": ("validator", "stranger", "stranger", "is not registered on netuid 1"),
    "miner, another account's EVM key": ("miner", "miner", "other", "pass that account's --evm-key"),
    "validator, no permit": ("validator", "validator", "validator", "rollproof chain permit"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_permanent_refusal_is_one_line_before_the_model_loads(served, model_loads, tmp_path, case):
    role, wallet, key, says = REFUSALS[case]
    store = tmp_path / "store"
    extra = ["--store", str(store)] if role == "miner" else []
    out = CliRunner().invoke(app, [role, "run", *served["chain"], "--wallet.name", wallet,
                                   "--evm-key", served["keys"][key], "--model", "tiny", "--device", "cpu",
                                   "--state-dir", str(tmp_path / "state"), *extra])
    assert out.exit_code == 2, out.output
    errors = _errors(out.output)
    assert len(errors) == 1 and says in errors[0], out.output
    assert "Traceback" not in out.output and "retrying" not in out.output, out.output
    assert model_loads == [], "the model was loaded before the refusal"
    assert not store.exists() or not list(store.rglob("*.rpb"))


def test_an_endpoint_without_the_contracts_fails_at_once_not_after_waiting(served, model_loads, tmp_path):
    """It answers eth_chainId, so the error is about what it serves: no waiting, even when allowed."""
    chain = list(served["chain"])
    chain[chain.index("--registry") + 1] = "0x" + "00" * 19 + "01"
    out = CliRunner().invoke(app, ["miner", "run", *chain, "--wallet.name", "miner", "--evm-key",
                                   served["keys"]["miner"], "--model", "tiny", "--chain-wait", "60",
                                   "--state-dir", str(tmp_path / "state"), "--store", str(tmp_path / "store")])
    assert out.exit_code == 2, out.output
    errors = _errors(out.output)
    assert len(errors) == 1 and "cannot reach the rollproof contracts" in errors[0], out.output
    assert "retrying" not in out.output and "still unreachable" not in out.output, out.output
    assert model_loads == []


@pytest.mark.parametrize("role", ["miner", "validator"])
def test_chain_wait_bounds_the_wait_for_a_dead_rpc(served, model_loads, tmp_path, role):
    chain = list(served["chain"])
    chain[chain.index("--rpc-url") + 1] = f"http://127.0.0.1:{dead_port()}/"
    out = CliRunner().invoke(app, [role, "run", *chain, "--wallet.name", "miner", "--evm-key", served["keys"]["miner"],
                                   "--model", "tiny", "--chain-wait", "1", "--state-dir", str(tmp_path / "state")],
                             env={"COLUMNS": "300"})
    assert out.exit_code == 2, out.output
    errors = _errors(out.output)
    assert len(errors) == 1 and "cannot connect" in errors[0], out.output
    assert "still unreachable after waiting 1 s, --chain-wait 1" in errors[0], errors
    assert sum("chain unreachable" in line for line in out.output.splitlines()) == 1, out.output
    assert model_loads == []


def test_chain_wait_0_fails_at_the_first_attempt_with_the_probe_message(served, tmp_path):
    port = dead_port()
    chain = list(served["chain"])
    chain[chain.index("--rpc-url") + 1] = f"http://127.0.0.1:{port}"
    out = CliRunner().invoke(app, ["miner", "run", *chain, "--wallet.name", "miner", "--model", "tiny",
                                   "--chain-wait", "0", "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 2
    assert out.output == f"error: --rpc-url http://127.0.0.1:{port}: cannot connect: Connection refused\n"


def test_miner_run_waits_for_a_dead_rpc_then_checks_and_refuses(served, tmp_path):
    """By default `miner run` waits out an RPC that is down at start, saying so once, and says once
    when it answers; then its startup check runs (here: the hotkey is not registered: exit 2)."""
    proxy = TCPProxy(("127.0.0.1", served["server"].port)).start()
    proxy.stop()  # the port is known; connections to it are refused until start()
    chain = list(served["chain"])
    chain[chain.index("--rpc-url") + 1] = proxy.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "BT_"))}
    env.update(HOME=str(tmp_path), COLUMNS="300", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "rollproof.cli", "miner", "run", *chain, "--wallet.name",
                             "stranger", "--evm-key", served["keys"]["stranger"], "--model", "tiny",
                             "--state-dir", str(tmp_path / "state"), "--store", str(tmp_path / "store")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not any("chain unreachable" in line for line in lines):
            assert proc.poll() is None, "".join(lines)  # waiting, not exiting
            assert time.monotonic() < deadline, f"no 'chain unreachable' line within {WAIT_S} s: {''.join(lines)}"
            time.sleep(0.1)
        time.sleep(1.5)  # a few retries while it is down: still one line
        assert proc.poll() is None, "".join(lines)
        proxy.start()
        code = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.stop()
    reader.join(10)
    text = "".join(lines)
    assert code == 2, text
    assert "Traceback" not in text
    assert sum("chain unreachable" in line for line in lines) == 1, text
    assert sum("chain reachable again" in line for line in lines) == 1, text
    errors = _errors(text)
    assert len(errors) == 1 and "is not registered on netuid 1" in errors[0], text
    assert "model tiny, fingerprint" not in text  # refused before the model loaded


# ---- a journal opened on a chain whose genesis changed (issue 24, item 7) -------------------------

def test_a_journal_of_another_genesis_stops_the_start_in_one_line(served, model_loads, tmp_path):
    """A restarted development chain (anvil --state) has a new block-0 hash, so its journal would be
    a new, empty directory beside the old one: the start says so and stops before the model loads."""
    state = tmp_path / "state"
    old = state / "evm-1-000000000000"  # the same chain name and netuid, another genesis
    (old / "windows" / "5").mkdir(parents=True)
    out = CliRunner().invoke(app, ["miner", "run", *served["chain"], "--wallet.name", "miner",
                                   "--evm-key", served["keys"]["miner"], "--model", "tiny", "--device", "cpu",
                                   "--store", str(tmp_path / "store"), "--state-dir", str(state)])
    assert out.exit_code == 2, out.output
    (error,) = _errors(out.output)
    assert "evm-1-000000000000" in error and "--new-chain" in error and "genesis" in error, out.output
    assert "Traceback" not in out.output and model_loads == []
    assert sorted(p.name for p in state.iterdir()) == ["evm-1-000000000000"]  # nothing created beside it


def test_new_chain_starts_a_fresh_journal_with_one_line(tmp_path, caplog):
    import logging

    import typer

    from rollproof.cli_common import journal_dir, other_genesis_journals

    root = tmp_path / "state"
    for name in ("evm-1-aaaaaaaaaaaa", "evm-1-bbbbbbbbbbbb", "evm-2-cccccccccccc", "beacons"):
        (root / name).mkdir(parents=True)
    identity = "evm-1-0123456789ab"
    assert other_genesis_journals(root, identity) == ["evm-1-aaaaaaaaaaaa", "evm-1-bbbbbbbbbbbb"]
    with pytest.raises(typer.Exit) as refused:
        journal_dir(root, identity, new_chain=False)
    assert refused.value.exit_code == 2
    caplog.set_level(logging.WARNING)
    assert journal_dir(root, identity, new_chain=True) == root / identity
    (line,) = [r.getMessage() for r in caplog.records if "--new-chain" in r.getMessage()]
    assert "0123456789ab" in line and "evm-1-aaaaaaaaaaaa, evm-1-bbbbbbbbbbbb" in line
    (root / identity).mkdir()  # the node ran once: later starts on this genesis say nothing
    assert other_genesis_journals(root, identity) == []
    assert journal_dir(root, identity, new_chain=False) == root / identity
    assert other_genesis_journals(root, "evm-3-0123456789ab") == []  # another netuid: no journal of its own kind
