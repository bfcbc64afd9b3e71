"""Every command and sub-command of `rollproof`, run as an operator would (a subprocess), with bad
arguments, missing wallets, silent and dead RPCs, bad model and bundle paths: each ends with its
documented exit code (2 error, 1 a rejection from `verify`), exactly one `error:` line, no
traceback, and within a bound (the subprocess timeout proves there is no hang; nothing is timed).

The cases run two at a time in a thread pool (each process imports torch or bittensor); HOME points
into a temporary directory so the default journal, store and wallet paths stay inside it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

ROOT = Path(__file__).resolve().parents[1]
HANG_BOUND_S = 120  # generous: a case that takes longer is a hang, not a slow machine
ZERO = "0x" + "00" * 20
KEY = "0x" + "11" * 32


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int = 2
    says: str = ""  # a substring of the error line (or, for code 1, of the REJECTED line)


@dataclass
class Outcome:
    code: int | None
    output: str
    hung: bool = False


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


def dead_port() -> int:
    """A port nothing listens on (bound once, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_wallet(path: Path, name: str = "op", hotkey: str = "hk") -> None:
    import bittensor as bt

    w = bt.Wallet(name=name, hotkey=hotkey, path=str(path))
    w.create_new_coldkey(use_password=False, suppress=True)
    w.create_new_hotkey(use_password=False, suppress=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory, base_bundle):
    from verification.bundle import encode_bundle

    tmp = tmp_path_factory.mktemp("walk")
    home = tmp / "home"
    home.mkdir()
    (tmp / "empty_wallets").mkdir()
    make_wallet(tmp / "wallets")
    a_file = tmp / "a_file"
    a_file.write_text("not a directory\n")
    (tmp / "empty_dir").mkdir()
    good = encode_bundle(base_bundle)
    (tmp / "good.rpb").write_bytes(good)
    (tmp / "truncated.rpb").write_bytes(good[: len(good) // 2])
    (tmp / "garbage.rpb").write_bytes(os.urandom(4096))
    (tmp / "validator_state" / "windows").mkdir(parents=True)
    silent = SilentServer()
    rpc, registry, ledger = netuid_one_registry()
    yield {"tmp": tmp, "home": home, "silent": silent.port, "dead": dead_port(), "rpc": rpc.url,
           "registry": registry, "ledger": ledger}
    silent.close()
    rpc.close()


def netuid_one_registry():
    """The rollproof contracts for netuid 1 on the embedded EVM, served over HTTP JSON-RPC."""
    from adapters.chain.evm import EVMChain
    from rpc_server import EmbeddedRPCServer

    server = EmbeddedRPCServer().start()
    with server.lock:
        registry, ledger = EVMChain.deploy(server.evm.w3, server.evm.admin, 1)
    return server, registry, ledger


def cases(w: dict) -> list[Case]:
    t = w["tmp"]
    silent_http, dead_http = f"http://127.0.0.1:{w['silent']}", f"http://127.0.0.1:{w['dead']}"
    silent_ws, dead_ws = f"ws://127.0.0.1:{w['silent']}", f"ws://127.0.0.1:{w['dead']}"
    empty = ("--wallet.path", str(t / "empty_wallets"), "--wallet.name", "nobody")
    wallet = ("--wallet.path", str(t / "wallets"), "--wallet.name", "op", "--wallet.hotkey", "hk")
    evm = ("--registry", ZERO, "--ledger", ZERO)
    vhk = ("--validator-hotkey", "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY")  # //Alice
    good, store, state = str(t / "good.rpb"), str(t / "store"), str(t / "state")
    # a node's `run` waits for an unreachable chain by default (rollproof/startup.py; the waiting is
    # tested in tests/test_cli_startup.py): here it is told to fail at the first attempt
    no_wait = ("--chain-wait", "0")
    no_such_gpu = _no_such_gpu()
    netuid_one = ("--rpc-url", w.get("rpc", dead_http), "--registry", w.get("registry", ZERO),
                  "--ledger", w.get("ledger", ZERO))
    # every EVM endpoint goes through one bounded probe (cli_common.probe_rpc), so a few commands
    # against the silent server stand for all of them (each waits out the probe's timeout)
    return [
        # the root and usage errors
        Case("unknown command", ("nope",), says="No such command"),
        Case("unknown option", ("miner", "run", "--foo"), says="No such option: --foo"),
        # miner register
        Case("register: short EVM key", ("miner", "register", "--evm-key", "0x12", "--rpc-url", dead_http, *evm),
             says="--evm-key is not an EVM private key"),
        Case("register: bad registry address", ("miner", "register", "--rpc-url", dead_http, "--registry", "0x12",
                                                "--ledger", ZERO), says="--registry 0x12: not an EVM address"),
        Case("register: --rpc-url without addresses", ("miner", "register", "--rpc-url", dead_http),
             says="needs --registry and --ledger"),
        Case("register: missing wallet", ("miner", "register", "--network", dead_ws, *empty), says="cannot load hotkey"),
        Case("register: dead RPC", ("miner", "register", "--rpc-url", dead_http, *evm, *wallet), says="cannot connect"),
        Case("register: silent subtensor", ("miner", "register", "--network", silent_ws, *wallet), says=silent_ws),
        Case("register: dead subtensor", ("miner", "register", "--network", dead_ws, *wallet), says=dead_ws),
        Case("register: unknown network", ("miner", "register", "--network", "nowhere"), says="--network nowhere"),
        Case("register: negative netuid", ("miner", "register", "--netuid", "-1"), says="--netuid"),
        Case("register: netuid over u16", ("miner", "register", "--netuid", "65536"), says="--netuid"),
        Case("register: a netuid the registry does not hold", ("miner", "register", *netuid_one, "--netuid", "5",
                                                               "--evm-key", KEY, *wallet),
             says="--netuid 5: the registry at"),
        # miner run: every range and path before any generation
        # the checkpoint's generation params fix the groups: the old option is refused, whatever its value
        Case("miner: --groups 8", ("miner", "run", "--groups", "8", "--model", "tiny"),
             says="--groups 8: no longer an option: the generation params of the window's checkpoint fix"),
        Case("miner: --groups 0", ("miner", "run", "--groups", "0", "--model", "tiny"), says="--groups 0: no longer"),
        Case("miner: batch size 0", ("miner", "run", "--batch-size", "0", "--model", "tiny"), says="--batch-size"),
        Case("miner: windows 0", ("miner", "run", "--windows", "0", "--model", "tiny"), says="--windows"),
        Case("miner: state dir is a file", ("miner", "run", "--model", "tiny", "--state-dir", str(t / "a_file")),
             says="--state-dir"),
        Case("miner: state dir under a file", ("miner", "run", "--model", "tiny",
                                               "--state-dir", str(t / "a_file" / "sub")), says="is not a directory"),
        Case("miner: store is a file", ("miner", "run", "--model", "tiny", "--store", str(t / "a_file")), says="--store"),
        Case("miner: s3 store without bucket", ("miner", "run", "--model", "tiny", "--store", "s3://"),
             says="s3://BUCKET[/PREFIX]"),
        Case("miner: s3 endpoint not a URL", ("miner", "run", "--model", "tiny", "--store", "s3://bucket",
                                              "--s3-endpoint", "r2"), says="--s3-endpoint r2"),
        Case("miner: model path missing", ("miner", "run", "--model", str(t / "no_model"), "--store", store,
                                           "--state-dir", state), says="not a Hugging Face model directory"),
        Case("miner: model path is a file", ("miner", "run", "--model", str(t / "a_file"), "--store", store,
                                             "--state-dir", state), says="not a Hugging Face model directory"),
        Case("miner: bad tiny seed", ("miner", "run", "--model", "tiny:x", "--store", store, "--state-dir", state),
             says="tiny"),
        Case("miner: missing wallet", ("miner", "run", "--model", "tiny", "--network", dead_ws, *empty),
             says="cannot load hotkey"),
        Case("miner: silent RPC", ("miner", "run", "--model", "tiny", "--rpc-url", silent_http, *evm, *wallet,
                                   *no_wait), says="no answer within"),
        Case("miner: dead RPC", ("miner", "run", "--model", "tiny", "--rpc-url", dead_http, *evm, *wallet, *no_wait),
             says="cannot connect"),
        Case("miner: negative chain wait", ("miner", "run", "--model", "tiny", "--chain-wait", "-1"),
             says="--chain-wait"),
        Case("miner: bad device", ("miner", "run", "--model", "tiny", "--device", "gpu"), says="--device gpu"),
        Case("miner: cuda GPU missing", ("miner", "run", "--model", "tiny", "--device", "cuda:4096", "--store", store,
                                         "--state-dir", state), says=no_such_gpu),
        Case("miner: unknown drand", ("miner", "run", "--model", "tiny", "--drand", "nope"), says="--drand nope"),
        Case("miner: bad log level", ("miner", "run", "--log-level", "LOUD"), says="--log-level"),
        Case("miner: a netuid the registry does not hold", ("miner", "run", "--model", "tiny", *netuid_one,
                                                            "--netuid", "5", *wallet, *no_wait),
             says="holds netuid 1"),
        Case("miner: checkpoint root is a file", ("miner", "run", "--model", "tiny",
                                                  "--checkpoint-root", str(t / "a_file")), says="--checkpoint-root"),
        Case("miner: bad announcer", ("miner", "run", "--model", "tiny", "--network", dead_ws,
                                      "--announcer", "notanss58"), says="--announcer 'notanss58'"),
        # validator run
        Case("validator: embedded chain", ("validator", "run", "--model", "tiny"), says="nothing to validate"),
        Case("validator: silent RPC", ("validator", "run", "--model", "tiny", "--rpc-url", silent_http, *evm, *wallet,
                                       *no_wait), says="no answer within"),
        Case("validator: dead RPC", ("validator", "run", "--model", "tiny", "--rpc-url", dead_http, *evm, *wallet,
                                     *no_wait), says="cannot connect"),
        Case("validator: bad device", ("validator", "run", "--network", dead_ws, "--device", "cuda:-1"),
             says="--device cuda:-1"),
        Case("validator: missing wallet", ("validator", "run", "--model", "tiny", "--network", dead_ws, *empty),
             says="cannot load hotkey"),
        Case("validator: dead subtensor", ("validator", "run", "--model", "tiny", "--network", dead_ws, *wallet,
                                           *no_wait), says=dead_ws),
        Case("validator: silent ledger RPC", ("validator", "run", "--model", "tiny", "--network", dead_ws,
                                              "--ledger-rpc-url", silent_http, *evm, "--evm-key", KEY, *wallet,
                                              *no_wait), says="--ledger-rpc-url"),
        Case("validator: fetch timeout 0", ("validator", "run", "--fetch-timeout", "0", "--network", "finney"),
             says="--fetch-timeout"),
        Case("validator: state dir is a file", ("validator", "run", "--network", dead_ws,
                                                "--state-dir", str(t / "a_file")), says="--state-dir"),
        Case("validator: file root is a file", ("validator", "run", "--network", dead_ws,
                                                "--file-root", str(t / "a_file")), says="--file-root"),
        Case("validator: model path missing", ("validator", "run", "--model", str(t / "no_model"),
                                               "--network", dead_ws, *wallet), says="not a Hugging Face model"),
        # verify: bundle paths, groups, model
        Case("verify: missing bundle", ("verify", str(t / "missing.rpb")), says="does not exist"),
        Case("verify: bundle is a directory", ("verify", str(t / "empty_dir")), says="is a directory"),
        Case("verify: garbage bundle", ("verify", str(t / "garbage.rpb"), "--model", "tiny"), code=1,
             says="bundle_format"),
        Case("verify: truncated bundle", ("verify", str(t / "truncated.rpb"), "--model", "tiny"), code=1,
             says="bundle_format"),
        Case("verify: group 99", ("verify", good, "--model", "tiny", "--groups", "99"), says="out of range"),
        Case("verify: group -1", ("verify", good, "--model", "tiny", "--groups=-1"), says="out of range"),
        Case("verify: no groups", ("verify", good, "--model", "tiny", "--groups", ","), says="no groups"),
        Case("verify: group not a number", ("verify", good, "--model", "tiny", "--groups", "a"),
             says="not a group index"),
        Case("verify: model path missing", ("verify", good, "--model", str(t / "no_model")),
             says="not a Hugging Face model"),
        Case("verify: model dir without config", ("verify", good, "--model", str(t / "empty_dir")),
             says="not a Hugging Face model"),
        Case("verify: fingerprint not hex", ("verify", good, "--model", "tiny", "--fingerprint", "zz"),
             says="--fingerprint zz"),
        Case("verify: checkpoints is a file", ("verify", good, "--checkpoints", str(t / "a_file")),
             says="--checkpoints"),
        Case("verify: checkpoints missing", ("verify", good, "--model", "tiny", "--checkpoints", "/nonexistent"),
             says="--checkpoints /nonexistent: no such directory"),
        Case("verify: trainer hotkey not ss58", ("verify", good, "--model", "tiny", "--checkpoints", str(t / "empty_dir"),
                                                 "--trainer-hotkey", "notanss58"),
             says="--trainer-hotkey notanss58: not an SS58 address"),
        Case("verify: trainer hotkey without checkpoints", ("verify", good, "--model", "tiny", "--trainer-hotkey",
                                                            "5EZ3S39Axe8yauoQL97cvaNwwGomCbLx7fqDiafFvE1Frr2X"),
             says="goes with --checkpoints"),
        Case("verify: hotkey not ss58", ("verify", good, "--model", "tiny", "--hotkey", "5EZ3S39Axe8yau"),
             says="--hotkey 5EZ3S39Axe8yau: not an SS58 address"),
        Case("verify: short block hash", ("verify", good, "--model", "tiny", "--block-hash", "abcd"),
             says="--block-hash abcd: 2 bytes, expected 32"),
        Case("verify: long fingerprint", ("verify", good, "--model", "tiny", "--fingerprint", "00" * 33),
             says="33 bytes, expected 32"),
        Case("verify: bad device", ("verify", good, "--model", "tiny", "--device", "cuda:x"), says="--device cuda:x"),
        # verify-checkpoint
        Case("verify-checkpoint: no ledger source", ("verify-checkpoint", "00" * 32, "--store", str(t)),
             says="--ledger-file FILE, or --rpc-url"),
        Case("verify-checkpoint: two ledger sources", ("verify-checkpoint", "00" * 32, "--store", str(t), "--ledger-file",
                                                      good, "--rpc-url", dead_http, *evm), says="give one"),
        Case("verify-checkpoint: fingerprint without a store", ("verify-checkpoint", "00" * 32, "--ledger-file", good),
             says="add --store DIR"),
        Case("verify-checkpoint: unknown fingerprint", ("verify-checkpoint", "00" * 32, "--store", str(t),
                                                       "--ledger-file", good), says="no checkpoint 0000000000000000"),
        Case("verify-checkpoint: no such manifest", ("verify-checkpoint", str(t / "nope.json"), "--ledger-file", good),
             says="no such manifest file"),
        Case("verify-checkpoint: ledger file is not a ledger", ("verify-checkpoint", good, "--ledger-file", good,
                                                               "--model", "tiny"), says="--ledger-file"),
        # trainer run (a valid --validator-hotkey: the option is required)
        Case("trainer: embedded chain", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state")),
             says="--rpc-url"),
        Case("trainer: missing validator state", ("trainer", "run", *vhk, "--validator-state", str(t / "nope"),
                                                  "--rpc-url", dead_http, *evm), says="--validator-state"),
        Case("trainer: dead RPC", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                   "--rpc-url", dead_http, *evm, *wallet, *no_wait), says="cannot connect"),
        Case("trainer: bad device", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                     "--device", "CUDA"), says="--device CUDA"),
        Case("trainer: public URL without an s3 store", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                                         "--rpc-url", dead_http, *evm, "--public-url", "https://pub.example"),
             says="--public-url goes with an s3:// store"),
        Case("trainer: bad public URL", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                         "--rpc-url", dead_http, *evm, "--store", "s3://bucket/ck",
                                         "--public-url", "ftp://pub.example"), says="--public-url"),
        Case("trainer: announced base too long", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                                  "--rpc-url", dead_http, *evm, "--store", "s3://bucket/" + "p" * 80),
             says="an announcement leaves 75"),
        Case("trainer: bad validator hotkey", ("trainer", "run", "--validator-state", str(t / "validator_state"),
                                               "--rpc-url", dead_http, *evm, "--validator-hotkey", "nope"),
             says="--validator-hotkey nope: not an SS58 address"),
        Case("trainer: lr out of range", ("trainer", "run", *vhk, "--validator-state", str(t / "validator_state"),
                                          "--lr", "5"), says="--lr"),
        # chain deploy / permit / trainer
        Case("deploy: silent RPC", ("chain", "deploy", "--rpc-url", silent_http, "--admin-key", KEY),
             says="no answer within"),
        Case("deploy: dead RPC", ("chain", "deploy", "--rpc-url", dead_http, "--admin-key", KEY), says="cannot connect"),
        Case("deploy: bad admin key", ("chain", "deploy", "--rpc-url", dead_http, "--admin-key", "0x12"),
             says="--admin-key"),
        Case("deploy: not a URL", ("chain", "deploy", "--rpc-url", "localhost:8545", "--admin-key", KEY),
             says="http(s)://"),
        Case("permit: negative uid", ("chain", "permit", "-1", "--rpc-url", dead_http, *evm, "--admin-key", KEY),
             says="-1"),
        Case("permit: dead RPC", ("chain", "permit", "3", "--rpc-url", dead_http, *evm, "--admin-key", KEY),
             says="cannot connect"),
        Case("chain trainer: bad hotkey", ("chain", "trainer", "--hotkey", "nope", "--trainer-address", ZERO,
                                           "--rpc-url", dead_http, *evm, "--admin-key", KEY), says="--hotkey nope"),
        Case("chain trainer: dead RPC", ("chain", "trainer", "--hotkey", "5EZ3S39Axe8yauoQL97cvaNwwGomCbLx7fqDiafFvE1Frr2X",
                                         "--trainer-address", ZERO, "--rpc-url", dead_http, *evm, "--admin-key", KEY),
             says="cannot connect"),
        Case("void: negative index", ("chain", "void", "-1", "--rpc-url", dead_http, *evm, "--admin-key", KEY),
             says="-1"),
        Case("void: bad admin key", ("chain", "void", "0", "--rpc-url", dead_http, *evm, "--admin-key", "0x12"),
             says="--admin-key"),
        Case("void: dead RPC", ("chain", "void", "0", "--rpc-url", dead_http, *evm, "--admin-key", KEY),
             says="cannot connect"),
        Case("announcements: dead RPC", ("chain", "announcements", "--rpc-url", dead_http, *evm), says="cannot connect"),
        Case("ledger: dead RPC", ("chain", "ledger", "--rpc-url", dead_http, *evm), says="cannot connect"),
        Case("ledger: bad ledger address", ("chain", "ledger", "--rpc-url", dead_http, "--registry", ZERO,
                                            "--ledger", "0x12"), says="--ledger"),
        Case("announcements: bad registry", ("chain", "announcements", "--rpc-url", dead_http, "--registry", "0x12",
                                             "--ledger", ZERO), says="--registry"),
        # localnet
        Case("localnet: workdir is a file", ("localnet", "--model", "tiny", "--workdir", str(t / "a_file")),
             says="--workdir"),
        Case("localnet: 0 groups", ("localnet", "--groups", "0"), says="--groups"),
        Case("localnet: model path missing", ("localnet", "--model", str(t / "no_model"), "--workdir", str(t / "ln")),
             says="not a Hugging Face model"),
        Case("localnet: plot is a directory", ("localnet", "--model", "tiny", "--plot", str(t / "empty_dir")),
             says="--plot"),
        Case("localnet: bad device", ("localnet", "--model", "tiny", "--device", "cuda:"), says="--device cuda:"),
    ]


def _no_such_gpu() -> str:
    """What `--device cuda:4096` is refused with on this machine (no CUDA at all, or fewer GPUs)."""
    import torch

    return "no CUDA GPU is available here" if not torch.cuda.is_available() else "CUDA GPU"


def run_cli(args: tuple[str, ...], home: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "BT_"))}
    env.update(HOME=str(home), COLUMNS="100", TOKENIZERS_PARALLELISM="false")
    try:
        proc = subprocess.run([sys.executable, "-m", "rollproof.cli", *args], capture_output=True, text=True,
                              timeout=HANG_BOUND_S, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return Outcome(None, out, hung=True)
    return Outcome(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def walked(world):
    todo = cases(world)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda c: run_cli(c.args, world["home"]), todo))
    return {c.name: (c, o) for c, o in zip(todo, outcomes)}


def _case_names() -> list[str]:
    fake = {"tmp": Path("/t"), "home": Path("/h"), "silent": 1, "dead": 2}
    return [c.name for c in cases(fake)]


@pytest.mark.parametrize("name", _case_names())
def test_each_failure_is_one_line_with_its_exit_code(walked, name):
    assert_outcome(*walked[name])


def assert_outcome(case: Case, out: Outcome) -> None:
    assert not out.hung, f"`rollproof {' '.join(case.args)}` ran past {HANG_BOUND_S} s:\n{out.output[-3000:]}"
    assert "Traceback" not in out.output, out.output[-3000:]
    assert out.code == case.code, f"exit {out.code}, expected {case.code}:\n{out.output[-3000:]}"
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    if case.code == 2:
        assert len(errors) == 1, f"expected one error line:\n{out.output[-3000:]}"
        assert case.says in errors[0], errors[0]
    else:  # a rejection: the verdict, not an error
        assert not errors, out.output[-3000:]
        rejected = [line for line in out.output.splitlines() if "REJECTED" in line]
        assert len(rejected) == 1 and case.says in out.output, out.output[-3000:]


def _command_paths() -> list[tuple[str, ...]]:
    import typer

    from rollproof.cli import app

    paths: list[tuple[str, ...]] = []

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            paths.append(prefix)
            return
        for name, sub in subs.items():
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return sorted(paths)


def test_the_walk_covers_every_command():
    paths = _command_paths()
    assert {("miner", "register"), ("miner", "run"), ("validator", "run"), ("verify",), ("trainer", "run"),
            ("chain", "deploy"), ("chain", "permit"), ("chain", "trainer"), ("localnet",)} <= set(paths)
    fake = {"tmp": Path("/t"), "home": Path("/h"), "silent": 1, "dead": 2}
    walked_paths = {c.args[: len(p)] for c in cases(fake) for p in paths if c.args[: len(p)] == p}
    assert set(paths) <= walked_paths, f"commands without a case: {set(paths) - walked_paths}"


@pytest.mark.parametrize("path", _command_paths())
def test_every_command_documents_its_exit_codes(path):
    from typer.testing import CliRunner

    from rollproof.cli import app

    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.replace("│", " ").split())
    assert "Exit codes: 0" in text and "2 error" in text, text[-600:]
    if path == ("verify",):
        assert "1 rejected" in text


def test_an_interrupt_exits_130_without_a_traceback(tmp_path):
    """Ctrl-C while `chain deploy` waits for an RPC that never answers."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "BT_"))}
    env.update(HOME=str(tmp_path))
    server = SilentServer()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "rollproof.cli", "chain", "deploy", "--rpc-url",
                                 f"http://127.0.0.1:{server.port}", "--admin-key", KEY],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        for _ in range(HANG_BOUND_S * 10):  # until it is inside the probe (connected, waiting for an answer)
            if server.conns or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert server.conns, "the command never connected"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=HANG_BOUND_S)
    finally:
        server.close()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "error:" not in out, out


# ---- --metrics-port, --metrics-host, --status-port -------------------------------------------------
# Each command's telemetry servers bind before the chain is read or the model loads: every case below
# gives a dead chain (waited for 0 s) and a model directory whose config.json is not JSON, so an
# error about the port or host proves the bind came first (the control cases show what the same
# commands say without the telemetry flags).
def telemetry_cases(w: dict) -> list[Case]:
    t = w["tmp"]
    taken = str(w["silent"])  # the silent server listens on it
    dead = ("--rpc-url", f"http://127.0.0.1:{w['dead']}", "--registry", ZERO, "--ledger", ZERO, "--evm-key", KEY,
            "--chain-wait", "0")
    wallet = ("--wallet.path", str(t / "wallets"), "--wallet.name", "op", "--wallet.hotkey", "hk")
    bad_model = ("--model", str(t / "bad_model"))
    trainer = ("trainer", "run", *wallet, *dead, *bad_model, "--validator-state", str(t / "validator_state"),
               "--validator-hotkey", "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "--store", str(t / "store"))
    miner = ("miner", "run", *wallet, *dead, *bad_model, "--store", str(t / "store"))
    validator = ("validator", "run", *wallet, *dead, *bad_model)
    in_use = f"127.0.0.1:{taken} is in use"
    return [
        Case("control: miner without telemetry reads the chain first", miner, says="cannot connect"),
        Case("control: localnet without telemetry loads the model first", ("localnet", *bad_model),
             says="cannot load model"),
        Case("miner: metrics port in use", (*miner, "--metrics-port", taken), says=f"--metrics-port {taken}: {in_use}"),
        Case("miner: metrics port out of range", (*miner, "--metrics-port", "65536"), says="--metrics-port"),
        Case("miner: metrics port not a number", (*miner, "--metrics-port", "http"), says="--metrics-port"),
        Case("miner: status port in use", (*miner, "--status-port", taken), says=f"--status-port {taken}: {in_use}"),
        Case("validator: metrics host not on this machine", (*validator, "--metrics-port", "0", "--metrics-host",
                                                             "203.0.113.1"),
             says="--metrics-host 203.0.113.1: 203.0.113.1 is not an address of this machine"),
        Case("validator: status port in use", (*validator, "--metrics-port", "0", "--status-port", taken),
             says=f"--status-port {taken}: {in_use}"),
        Case("validator: metrics port in use beside a status port", (*validator, "--metrics-port", taken,
                                                                     "--status-port", "0"),
             says=f"--metrics-port {taken}: {in_use}"),
        Case("trainer: metrics host does not resolve", (*trainer, "--metrics-port", "0", "--metrics-host",
                                                        "no-such-host.invalid"),
             says="--metrics-host no-such-host.invalid: no-such-host.invalid does not resolve"),
        Case("trainer: metrics port in use", (*trainer, "--metrics-port", taken), says=f"--metrics-port {taken}: {in_use}"),
        Case("localnet: metrics port in use", ("localnet", *bad_model, "--metrics-port", taken),
             says=f"--metrics-port {taken}: {in_use}"),
        Case("localnet: status port is the metrics port", ("localnet", *bad_model, "--metrics-port", "9100",
                                                           "--status-port", "9100"), says="the same as --metrics-port"),
        Case("localnet: metrics host without a port", ("localnet", *bad_model, "--metrics-host", "0.0.0.0"),
             says="--metrics-host 0.0.0.0: goes with --metrics-port"),
    ]


@pytest.fixture(scope="module")
def walked_telemetry(world):
    (world["tmp"] / "bad_model").mkdir(exist_ok=True)
    (world["tmp"] / "bad_model" / "config.json").write_text("not a config\n")
    todo = telemetry_cases(world)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda c: run_cli(c.args, world["home"]), todo))
    return {c.name: (c, o) for c, o in zip(todo, outcomes)}


@pytest.mark.parametrize("name", [c.name for c in telemetry_cases({"tmp": Path("/t"), "silent": 1, "dead": 2})])
def test_a_telemetry_flag_that_cannot_serve_is_one_line_before_the_chain_or_model(walked_telemetry, name):
    assert_outcome(*walked_telemetry[name])


@pytest.mark.parametrize("path", [("miner", "run"), ("validator", "run"), ("trainer", "run"), ("localnet",)])
def test_every_node_command_takes_the_telemetry_flags(path):
    from typer.testing import CliRunner

    from rollproof.cli import app

    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    for flag in ("--metrics-port", "--metrics-host", "--status-port"):
        assert flag in out.output, (flag, out.output[-2000:])


# ---- the central handler, in process ---------------------------------------------------------------

def _guarded_failure(exc: BaseException, capsys) -> tuple[int, str]:
    import typer

    from rollproof.cli_common import guarded

    def command():
        raise exc

    with pytest.raises(typer.Exit) as stopped:
        guarded(command)()
    captured = capsys.readouterr()
    return stopped.value.exit_code, captured.out + captured.err


@pytest.mark.parametrize("make", [
    lambda: __import__("botocore.exceptions", fromlist=["x"]).ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "proxy said\nno [/prefix]"}}, "PutObject"),
    lambda: __import__("botocore.exceptions", fromlist=["x"]).ProxyConnectionError(proxy_url="http://127.0.0.1:9"),
    lambda: NotADirectoryError(20, "Not a directory", "/srv/a_file/windows"),
    lambda: ValueError("multi\nline [bold]markup[/bold]"),
    lambda: __import__("json").JSONDecodeError("Expecting value", "{", 1),
    lambda: RuntimeError("something nobody expected"),
], ids=["boto client error", "boto proxy error", "not a directory", "value error", "json", "unexpected"])
def test_every_exception_becomes_one_escaped_line_and_exit_2(make, capsys):
    code, out = _guarded_failure(make(), capsys)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out, out


def test_a_pydantic_error_is_one_line_naming_the_field(capsys):
    from pydantic import BaseModel, Field, ValidationError

    class Groups(BaseModel):
        n: int = Field(le=256)

    try:
        Groups(n=257)
    except ValidationError as exc:
        code, out = _guarded_failure(exc, capsys)
    assert code == 2 and out.count("\n") == 1 and "n: Input should be less than or equal to 256" in out, out


def test_keyboard_interrupt_is_exit_130_and_quiet(capsys):
    code, out = _guarded_failure(KeyboardInterrupt(), capsys)
    assert code == 130 and out == ""


@given(st.text(alphabet="0123456789,- a", max_size=24))
def test_groups_option_parses_or_fails_with_one_line(spec):
    import typer

    from rollproof.cli_common import check_groups_list
    from verification.constants import MAX_GROUPS_PER_BUNDLE

    try:
        groups = check_groups_list(spec)
    except typer.Exit as stopped:
        assert stopped.exit_code == 2
        return
    assert groups, "an accepted --groups checks at least one group"
    assert len(set(groups)) == len(groups) and all(0 <= g < MAX_GROUPS_PER_BUNDLE for g in groups)
    assert check_groups_list(",".join(map(str, groups))) == groups


# ---- --device (rollproof/device.py), in process ----------------------------------------------------

@pytest.mark.parametrize("spec", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:01", "cuda:0:1", " cpu", "mps", ""])
def test_a_malformed_device_is_refused_before_torch_is_asked(spec):
    from rollproof.device import DeviceError, resolve_device

    with pytest.raises(DeviceError, match=r"use cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_cuda_is_refused_where_torch_sees_no_gpu_and_accepted_where_it_does():
    import torch

    from rollproof.device import DeviceError, resolve_device

    assert resolve_device("cpu") == "cpu"
    for spec in ("cuda", "cuda:0", "cuda:7"):
        if torch.cuda.is_available() and int(spec.partition(":")[2] or 0) < torch.cuda.device_count():
            assert resolve_device(spec) == spec
        elif not torch.cuda.is_available():  # this machine, honestly: no CUDA device
            with pytest.raises(DeviceError, match=r"no CUDA GPU is available here \(torch.cuda.is_available\(\) is False"):
                resolve_device(spec)


def test_a_gpu_index_beyond_the_device_count_is_refused(monkeypatch):
    """The counting branch, on a machine that reports two GPUs (torch.cuda's answers replaced: the
    branch cannot be reached otherwise without a GPU)."""
    import torch

    from rollproof.device import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert [resolve_device(s) for s in ("cuda", "cuda:0", "cuda:1")] == ["cuda", "cuda:0", "cuda:1"]
    with pytest.raises(DeviceError, match=r"--device cuda:2: this machine has 2 CUDA GPUs \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


MODEL_COMMANDS = [("miner", "run"), ("validator", "run"), ("verify",), ("trainer", "run"), ("localnet",)]


@pytest.mark.parametrize("path", MODEL_COMMANDS)
def test_every_command_that_loads_a_model_takes_device(path):
    from typer.testing import CliRunner

    from rollproof.cli import app

    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "--device" in out.output and "cuda:N" in out.output, out.output


def test_verify_with_device_cpu_end_to_end(tmp_path, base_bundle, monkeypatch):
    from typer.testing import CliRunner

    import verification.model
    from rollproof.cli import app
    from verification.bundle import encode_bundle

    path = tmp_path / "good.rpb"
    path.write_bytes(encode_bundle(base_bundle))
    loaded, real = [], verification.model.load_model
    monkeypatch.setattr(verification.model, "load_model", lambda *a, **kw: loaded.append(real(*a, **kw)) or loaded[-1])
    out = CliRunner().invoke(app, ["verify", str(path), "--model", "tiny", "--device", "cpu"])
    assert out.exit_code == 0 and "ACCEPTED" in out.output, out.output
    assert [lm.device for lm in loaded] == ["cpu"]
    assert {p.device.type for p in loaded[0].model.parameters()} == {"cpu"}


SCRIPTS = ["attacks", "false_rejections", "steering", "learning", "learning_zone", "checkpoint_bytes", "training_choice"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_measurement_script_refuses_a_bad_device_in_one_line(script, monkeypatch, capsys):
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(f"script_{script}", ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--device", "cuda:x"])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --device cuda:x: use cpu, cuda or cuda:N (N the index of a CUDA GPU)\n", err
