"""Options and helpers shared by the role commands: btcli-style wallet flags, chain and drand, the
argument checks every command runs before any work, and the one place that turns a failure into one
red line and an exit code.

Exit codes (README "Operating a node", and each command's --help): 0 done (`verify`: accepted),
1 `verify` only: the bundle is rejected, 2 error (one line on stderr, no traceback), 130
interrupted (a second Ctrl-C)."""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import re
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperGroup

from adapters.connect import BITTENSOR_NETWORKS, EMBEDDED, ChainOptions, WalletOptions
from rollproof.device import DEVICE_HELP, DeviceError, resolve_device
from verification.constants import MAX_GROUPS_PER_BUNDLE
from verification.errors import ChainError, ConfigError, RollproofError

console = Console(stderr=True)
log = logging.getLogger("rollproof.cli")

EXIT_OK, EXIT_REJECTED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES_HELP = ("Exit codes: 0 done; 2 error (one line on stderr: bad arguments, missing wallet, unreachable "
                   "chain, store or relay, ...); 130 interrupted.")
VERIFY_EXIT_CODES_HELP = ("Exit codes: 0 every checked rollout accepted; 1 rejected (the verdict says why); 2 error: "
                          "the audit could not run (one line on stderr); 130 interrupted.")
TRACEBACK_ENV = "ROLLPROOF_TRACEBACK"  # set to 1 to let an unexpected exception's traceback through
RPC_PROBE_TIMEOUT_S = 10.0  # an EVM endpoint that does not answer eth_chainId within this is refused at start

# ---- shared options ------------------------------------------------------------------------------
WalletName = typer.Option("default", "--wallet.name", "--wallet-name", help="wallet (coldkey) name")
WalletHotkey = typer.Option("default", "--wallet.hotkey", "--wallet-hotkey", help="hotkey name")
WalletPath = typer.Option("~/.bittensor/wallets", "--wallet.path", "--wallet-path", help="wallets directory")
Network = typer.Option("embedded", "--network", "--subtensor.network",
                       help="'embedded' (in-process EVM), or a Bittensor network: finney, test, local, ws(s)://…")
# netuids are u16 on Bittensor and in the registry contract
Netuid = typer.Option(1, "--netuid", min=0, max=65535, help="subnet uid")
RpcUrl = typer.Option(None, "--rpc-url", help="EVM JSON-RPC endpoint running the rollproof contracts (anvil, Bittensor EVM)")
Registry = typer.Option(None, "--registry", help="SubnetRegistry address (with --rpc-url)")
Ledger = typer.Option(None, "--ledger", help="ScoreLedger address (with --rpc-url)")
LedgerRpcUrl = typer.Option(None, "--ledger-rpc-url",
                            help="with a Bittensor --network: record the score ledger in the ScoreLedger contract at "
                                 "this EVM endpoint (the subtensor's EVM; needs --registry, --ledger, --evm-key)")
Announcer = typer.Option(None, "--announcer",
                         help="Bittensor without --ledger-rpc-url: hotkey (ss58) or uid whose commitment announces "
                              "checkpoints (default: the subnet owner's hotkey); the same on every node")
EvmKey = typer.Option(None, "--evm-key", envvar="ROLLPROOF_EVM_KEY", help="funded EVM account key (with --rpc-url)")
Drand = typer.Option(None, "--drand", help="'local' (default on EVM chains) or 'quicknet' (default on Bittensor)")
LocalSeed = typer.Option(None, "--local-drand-seed", help="seed of the local drand chain")
DEFAULT_MODEL = "smollm2"  # every role's --model default
DEFAULT_STORE = "~/.rollproof/store"  # miners' and the trainer's --store, validators' --file-root, --checkpoint-root
Model = typer.Option(DEFAULT_MODEL, "--model", help="'smollm2', 'tiny' / 'tiny:SEED' or a local HF model directory")
LogLevel = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING")
Threads = typer.Option(None, "--threads", help="CPU threads torch may use (default: torch's own choice)")
Device = typer.Option("cpu", "--device", help=DEVICE_HELP)
Engine = typer.Option("hf", "--engine",
                      help="generation engine: 'hf' (Hugging Face decode loop, any torch device) or 'vllm' (vLLM's "
                           "continuous batching with the proof inside its decoding pass; needs the vllm extra: README)")
EngineMemory = typer.Option(None, "--engine-memory", min=0.01, max=0.99,
                            help="vllm: share of memory it reserves for weights and KV cache (default 0.1 of the "
                                 "host's memory on cpu, 0.9 of the GPU's on cuda)")
DEFAULT_METRICS_HOST = "127.0.0.1"
MetricsPort = typer.Option(None, "--metrics-port", min=0, max=65535,
                           help="serve Prometheus metrics at http://HOST:PORT/metrics and the status page at / "
                                "(absent: no server; 0: any free port, the start line says which)")
MetricsHost = typer.Option(DEFAULT_METRICS_HOST, "--metrics-host",
                           help="address the metrics and status page listen on (0.0.0.0: every interface; both are "
                                "read-only and show only what the journals hold publicly)")
StatusPort = typer.Option(None, "--status-port", min=0, max=65535,
                          help="serve the status page on this port instead of at / of --metrics-port")
ChainWait = typer.Option(None, "--chain-wait", min=0.0,
                         help="seconds to wait at start for an unreachable chain, logging when it goes down and "
                              "comes back (default: until it answers; 0: fail at once)")


# ---- one line per failure ------------------------------------------------------------------------
def one_line(text: object) -> str:
    """Collapse whitespace and newlines: an error is one line, whatever the library wrote."""
    return " ".join(str(text).split())


def print_error(message: str) -> None:
    # escape: messages carry user input and exception text ("s3://bucket[/prefix]" is rich markup);
    # soft_wrap: never broken over several lines at the terminal width
    # emoji=False: "cuda:x:" or ":smile:" in a value is text, not an emoji code
    console.print(f"[red]error:[/red] {escape(one_line(message))}", soft_wrap=True, highlight=False, emoji=False)


def fail(message: str) -> NoReturn:
    """One red line on stderr, exit code 2."""
    print_error(message)
    raise typer.Exit(EXIT_ERROR)


def describe(exc: BaseException) -> str:
    """The one-line message of an exception a command let through."""
    if isinstance(exc, RollproofError):
        return one_line(exc)
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a dependency
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ())) or exc.title
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return one_line(f"invalid {exc.title}: {where}: {first.get('msg')}{more}")
    if isinstance(exc, json.JSONDecodeError):
        return one_line(f"invalid JSON: {exc}")
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return one_line(f"{exc.filename}: {exc.strerror}")
        return one_line(exc) or type(exc).__name__
    if type(exc).__module__.startswith(("botocore", "boto3")):
        return one_line(f"S3: {exc}")
    if isinstance(exc, ValueError):
        return one_line(exc)
    return one_line(f"unexpected {type(exc).__name__}: {exc} (set {TRACEBACK_ENV}=1 for the traceback)")


def _exception_classes(name: str) -> tuple[type, ...]:
    """`name` from click and from the click typer vendors (typer >= 0.2x ships its own copy; its
    exceptions are other classes than click's)."""
    import importlib

    found = []
    for module in ("typer.exceptions", "typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


_EXIT = _exception_classes("Exit")
_ABORT = _exception_classes("Abort")
_USAGE = _exception_classes("ClickException") + _exception_classes("TyperException")
_NO_ARGS_HELP = _exception_classes("NoArgsIsHelpError")


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command so that no traceback reaches the user: any exception becomes one red line and
    exit code 2, Ctrl-C exit code 130 without a word. typer/click exits pass through."""

    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _EXIT + _ABORT + _USAGE:
            raise
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the one place every failure is turned into a line
            if os.environ.get(TRACEBACK_ENV):
                raise
            log.debug("%s failed", fn.__name__, exc_info=True)
            print_error(describe(exc))
            raise typer.Exit(EXIT_ERROR) from None

    return command


class OneLineErrors(TyperGroup):
    """The root command group: usage errors (unknown option, a value out of range, a missing file
    argument) print one line, `error: … (see `rollproof X --help`)`, with exit code 2, instead of
    click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _NO_ARGS_HELP as exc:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)  # the command's help, as typer prints it
            code = exc.exit_code
        except _USAGE as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) is not None else ""
            print_error(exc.format_message() + hint)
            code = exc.exit_code
        except _ABORT:
            code = EXIT_INTERRUPTED
        else:
            code = rv if isinstance(rv, int) else EXIT_OK
        if standalone_mode:
            raise SystemExit(code)
        return code


class App(typer.Typer):
    """typer.Typer whose commands run through `guarded` and carry the exit codes in their --help."""

    def __init__(self, *, exit_codes: str = EXIT_CODES_HELP, **kwargs):
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)
        self.exit_codes = exit_codes

    def command(self, name: Optional[str] = None, *, epilog: Optional[str] = None, **kwargs):
        register = super().command(name, epilog=epilog or self.exit_codes, **kwargs)

        def decorator(fn):
            register(guarded(fn))
            return fn

        return decorator


# ---- argument checks (before any work) -----------------------------------------------------------
_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def apply_threads(threads: Optional[int]) -> None:
    """--threads: checked before any work (one-line error, exit code 2), then torch.set_num_threads."""
    if threads is None:
        return
    if threads < 1:
        fail(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_device(spec: str, flag: str = "--device") -> str:
    """--device: cpu, cuda or cuda:N that this machine has, checked before any work (one-line error,
    exit code 2): rollproof.device.resolve_device."""
    try:
        return resolve_device(spec, flag)
    except DeviceError as exc:
        fail(str(exc))


def check_engine(name: str, flag: str = "--engine") -> str:
    """--engine: a known engine that is installed here, checked before any work (one-line error, exit 2)."""
    from miner.engine_choice import engine_problem

    problem = engine_problem(name)
    if problem:
        fail(f"{flag} {name}: {problem}")
    return name


def check_directory(path: Optional[Path | str], flag: str, *, must_exist: bool = False) -> Optional[Path]:
    """A directory option (journal, store, workdir): an existing directory, or one that can be
    created (its nearest existing ancestor is a writable directory). Nothing is created here.
    must_exist: a directory read from (`verify --checkpoints`), which must be there and readable."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if must_exist:
        if not p.exists():
            fail(f"{flag} {path}: no such directory")
        if not p.is_dir():
            fail(f"{flag} {path}: not a directory")
        if not os.access(p, os.R_OK | os.X_OK):
            fail(f"{flag} {path}: not readable")
        return p
    if p.exists():
        if not p.is_dir():
            fail(f"{flag} {path}: not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            fail(f"{flag} {path}: not writable")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        fail(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot create it, {parent} is not writable")
    return p


NewChain = typer.Option(False, "--new-chain",
                        help="start a fresh journal when --state-dir holds only journals of a chain with the same "
                             "name and netuid but another genesis (a restarted development chain)")

_IDENTITY_HASH = re.compile(r"[0-9a-f]{12}")


def other_genesis_journals(root: Path, identity: str) -> list[str]:
    """The journals under `root` of chains with identity's name and netuid but another block-0
    hash (Chain.identity(): NAME-NETUID-HASH12), sorted; none when identity's own journal exists."""
    prefix, _, digest = identity.rpartition("-")
    if not prefix or not _IDENTITY_HASH.fullmatch(digest) or (root / identity).exists() or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(prefix + "-") and _IDENTITY_HASH.fullmatch(p.name[len(prefix) + 1:]))


def journal_dir(root: Path, identity: str, *, new_chain: bool, logger: logging.Logger = log) -> Path:
    """The node's journal for this chain: root/identity. A journal keyed by the genesis hash means a
    restarted chain (anvil --state, a redeployed local chain) would silently open an empty one beside
    the old: when root holds journals of the same chain name and netuid with another genesis and none
    for this one, the start stops (one line naming them and the new genesis, exit 2) unless
    `new_chain` (--new-chain), which starts the fresh journal with one warning line."""
    old = other_genesis_journals(root, identity)
    if old:
        genesis = identity.rpartition("-")[2]
        names = ", ".join(old)
        if not new_chain:
            fail(f"{root} holds the journal of another chain with this name and netuid ({names}), and this chain's "
                 f"genesis is {genesis}: pass --new-chain to start a fresh journal {identity} (a restarted "
                 f"development chain), or connect to the chain the old journal belongs to")
        logger.warning("chain genesis %s has no journal in %s (journals of other genesis: %s): --new-chain, "
                       "starting a fresh journal %s", genesis, root, names, identity)
    return root / identity


def check_store(spec: str, flag: str = "--store") -> str:
    """`s3://BUCKET[/PREFIX]` with a valid bucket name, or a directory (see check_directory)."""
    if spec.startswith("s3://"):
        bucket = spec[5:].partition("/")[0]
        if not _S3_BUCKET.fullmatch(bucket):
            fail(f"{flag} {spec}: an S3 store is s3://BUCKET[/PREFIX] with a bucket name of 3-63 "
                 f"lower-case letters, digits, '.' or '-'")
        return spec
    if "://" in spec:
        fail(f"{flag} {spec}: a store is a directory or s3://BUCKET[/PREFIX]")
    check_directory(spec, flag)
    return spec


def check_evm_key(key: Optional[str], flag: str = "--evm-key") -> Optional[str]:
    """A 32-byte hex private key. The message never repeats the key (it is a secret)."""
    if key is None:
        return None
    if not _HEX_KEY.fullmatch(key.strip()):
        fail(f"{flag} is not an EVM private key: 32 bytes as 64 hex digits, optionally with 0x "
             f"(got {len(key)} characters)")
    return key.strip()


def check_ss58(address: Optional[str], flag: str) -> Optional[str]:
    """A hotkey given as an SS58 address (checksum included), before any work."""
    if address is None:
        return None
    from bittensor.sp_core import Keypair

    try:
        Keypair(ss58_address=address)
    except Exception:  # noqa: BLE001 - the SDK raises several types for a bad address
        fail(f"{flag} {address}: not an SS58 address (a hotkey such as 5F…, 48 characters)")
    return address


def check_hex_bytes(value: Optional[str], flag: str, size: int) -> Optional[bytes]:
    """`size` bytes as 2*size hex digits (a fingerprint, a block hash)."""
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        fail(f"{flag} {value}: not hex")
    if len(raw) != size:
        fail(f"{flag} {value}: {len(raw)} bytes, expected {size} ({2 * size} hex digits)")
    return raw


def check_address(address: Optional[str], flag: str) -> Optional[str]:
    if address is None:
        return None
    if not _HEX_ADDRESS.fullmatch(address.strip()):
        fail(f"{flag} {address}: not an EVM address (0x and 40 hex digits, as `rollproof chain deploy` prints)")
    return address.strip()


def check_http_url(url: Optional[str], flag: str, what: str = "an EVM JSON-RPC endpoint",
                   example: str = "http://127.0.0.1:8545") -> Optional[str]:
    if url is None:
        return None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        fail(f"{flag} {url}: {what} is an http(s):// URL, e.g. {example}")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        fail(f"{flag} {url}: bad port")
    return url


class EndpointUnreachable(ChainError):
    """An EVM endpoint that refuses the connection or does not answer in time: an outage, which a
    node's `run` waits out (rollproof/startup.py) and a one-shot command reports."""


def read_chain_id(url: str, flag: str = "--rpc-url", timeout: float = RPC_PROBE_TIMEOUT_S) -> int:
    """One eth_chainId request, bounded by `timeout` per socket operation. Returns the chain id;
    raises EndpointUnreachable (refused, no answer: may pass) or ConfigError (the endpoint answers,
    but not as JSON-RPC: a wrong URL, which waiting does not fix). Messages name the flag and URL."""
    check_http_url(url, flag)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    silent = f"{flag} {url}: no answer within {timeout:g} s (is the node up, and is this its JSON-RPC port?)"
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) checked above
            answer = json.loads(resp.read(1 << 20))
    except TimeoutError:
        raise EndpointUnreachable(silent) from None
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"{flag} {url}: HTTP {exc.code} {exc.reason} (not a JSON-RPC endpoint?)") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise EndpointUnreachable(silent) from None
        raise EndpointUnreachable(f"{flag} {url}: cannot connect: {getattr(reason, 'strerror', None) or reason}") from None
    except (ConnectionError, http.client.HTTPException) as exc:  # cut mid-answer (a node restarting)
        raise EndpointUnreachable(f"{flag} {url}: connection lost: {exc or type(exc).__name__}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {url}: not a JSON-RPC answer: {exc}") from None
    if not isinstance(answer, dict) or "result" not in answer:
        raise ConfigError(f"{flag} {url}: eth_chainId returned no result: {str(answer)[:200]}")
    result = answer["result"]
    try:
        return result if isinstance(result, int) else int(result, 16)  # nodes answer hex; some test servers ints
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {url}: eth_chainId returned {answer['result']!r}") from None


def probe_rpc(url: str, flag: str = "--rpc-url", timeout: float = RPC_PROBE_TIMEOUT_S) -> int:
    """read_chain_id for a one-shot command: an endpoint that refuses connections, never answers or
    is not JSON-RPC is refused with one line before any work. Returns the chain id."""
    try:
        return read_chain_id(url, flag, timeout)
    except (EndpointUnreachable, ConfigError) as exc:
        fail(str(exc))


def evm_endpoints(opts: ChainOptions) -> list[tuple[str, str]]:
    """(flag, url) of every EVM JSON-RPC endpoint the options name."""
    return [(flag, url) for flag, url in (("--rpc-url", opts.rpc_url), ("--ledger-rpc-url", opts.ledger_rpc_url))
            if url is not None]


def check_network(network: str) -> str:
    if network == EMBEDDED or network in BITTENSOR_NETWORKS:
        return network
    parsed = urllib.parse.urlsplit(network)
    if parsed.scheme in ("ws", "wss") and parsed.hostname:
        return network
    fail(f"--network {network}: use embedded, one of {', '.join(BITTENSOR_NETWORKS)}, or a ws(s):// endpoint")


def check_model(spec: str, flag: str = "--model") -> str:
    """The model spec's form, before any chain or bundle work (verification.model.load_model loads it):
    'smollm2', 'tiny' / 'tiny:SEED', or a directory holding a Hugging Face config.json."""
    if spec in ("smollm2", "tiny"):
        return spec
    if spec.startswith("tiny:"):
        if not re.fullmatch(r"-?[0-9]+", spec[5:]):
            fail(f"{flag} {spec}: bad tiny model seed (tiny:SEED with an integer SEED)")
        return spec
    if not (Path(spec).expanduser() / "config.json").is_file():
        fail(f"{flag} {spec}: not a Hugging Face model directory (no config.json); use smollm2, tiny or such a directory")
    return spec


def check_groups_list(spec: Optional[str], flag: str = "--groups") -> Optional[list[int]]:
    """`--groups 0,3`: distinct group indices in [0, MAX_GROUPS_PER_BUNDLE); None when not given."""
    if spec is None:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if not any(parts):
        fail(f"{flag} {spec!r}: no groups to check (give indices like 0,3, or leave {flag} out to check every group)")
    out: list[int] = []
    for p in parts:
        if not p:
            continue
        if not re.fullmatch(r"-?[0-9]+", p):
            fail(f"{flag} {spec}: {p!r} is not a group index")
        g = int(p)
        if not 0 <= g < MAX_GROUPS_PER_BUNDLE:
            fail(f"{flag} {spec}: group index {g} is out of range (0..{MAX_GROUPS_PER_BUNDLE - 1})")
        if g not in out:
            out.append(g)
    return out


def check_chain_args(opts: ChainOptions, *, probe: bool = True) -> ChainOptions:
    """Every chain flag, before a model is loaded or a key is read: the network name, key and
    address formats, and (with `probe`) that each EVM endpoint answers within RPC_PROBE_TIMEOUT_S.
    A node's `run` passes probe=False: rollproof/startup.py probes inside its wait for the chain."""
    check_network(opts.network)
    opts.evm_key = check_evm_key(opts.evm_key)
    opts.registry = check_address(opts.registry, "--registry")
    opts.ledger = check_address(opts.ledger, "--ledger")
    if opts.rpc_url is not None:
        if not (opts.registry and opts.ledger):
            fail("--rpc-url needs --registry and --ledger (`rollproof chain deploy` prints them)")
        check_http_url(opts.rpc_url, "--rpc-url")
    if opts.ledger_rpc_url is not None:
        if not opts.is_bittensor:
            fail("--ledger-rpc-url goes with a Bittensor --network; on an EVM chain the ledger is already there")
        if not (opts.registry and opts.ledger and opts.evm_key):
            fail("--ledger-rpc-url needs --registry, --ledger and --evm-key (see `rollproof chain deploy`)")
        check_http_url(opts.ledger_rpc_url, "--ledger-rpc-url")
    if opts.announcer is not None:
        from adapters.connect import parse_announcer

        try:
            parse_announcer(opts.announcer)
        except ConfigError as exc:
            fail(str(exc))
    if opts.drand is not None and opts.drand != "local":
        from verification.drand import PUBLIC_NETWORKS

        if opts.drand not in PUBLIC_NETWORKS:
            fail(f"--drand {opts.drand}: use local or one of {', '.join(sorted(PUBLIC_NETWORKS))}")
    if probe:
        for flag, url in evm_endpoints(opts):
            probe_rpc(url, flag)
    return opts


def chain_options(network: str, netuid: int, rpc_url: Optional[str], registry: Optional[str],
                  ledger: Optional[str], evm_key: Optional[str], drand: Optional[str],
                  local_drand_seed: Optional[str], ledger_rpc_url: Optional[str] = None,
                  announcer: Optional[str] = None) -> ChainOptions:
    return ChainOptions(network=network, netuid=netuid, rpc_url=rpc_url, registry=registry, ledger=ledger,
                        evm_key=evm_key, drand=drand, local_drand_seed=local_drand_seed,
                        ledger_rpc_url=ledger_rpc_url, announcer=announcer)


def wallet_options(name: str, hotkey: str, path: str) -> WalletOptions:
    return WalletOptions(name=name, hotkey=hotkey, path=path)


def setup_logging(level: str) -> None:
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        fail(f"--log-level {level}: use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=level.upper(), format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
                        force=True)
    for noisy in ("web3", "urllib3", "botocore", "transformers", "filelock", "asyncio", "bittensor"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event: the loop finishes its current step and exits (code 0).
    A second SIGINT interrupts at once (exit code 130; the journal makes that safe)."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        console.print(f"[yellow]{signal.Signals(signum).name}: finishing the current step, then stopping "
                      f"(Ctrl-C again to abort now)[/yellow]")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def serve_telemetry(role: str, host: str, metrics_port: Optional[int], status_port: Optional[int]):
    """--metrics-port, --metrics-host, --status-port: the process's registry and its servers, bound
    now, before any model loads or the chain is read; a port in use or privileged, or a host that
    does not resolve or is not this machine's, is one line and exit code 2. Prints where they serve.
    Returns rollproof.telemetry.Telemetry (its registry goes to every role the command builds)."""
    from rollproof.telemetry import start_telemetry
    from verification.errors import TelemetryBindError

    if metrics_port is None and status_port is None and host != DEFAULT_METRICS_HOST:
        fail(f"--metrics-host {host}: goes with --metrics-port or --status-port (nothing is served without a port)")
    if metrics_port is not None and metrics_port == status_port and metrics_port != 0:
        fail(f"--status-port {status_port}: the same as --metrics-port; leave --status-port out to serve the page "
             f"at / of the metrics port")
    try:
        telemetry = start_telemetry(role, host, metrics_port, status_port)
    except TelemetryBindError as exc:
        if exc.part == "host":
            fail(f"--metrics-host {host}: {exc}")
        on_status = status_port is not None and exc.port == status_port and exc.port != metrics_port
        fail(f"{'--status-port' if on_status else '--metrics-port'} {exc.port}: {exc}")
    where = telemetry.where()
    if where is not None:
        console.print(escape(where), soft_wrap=True, highlight=False)
    return telemetry
