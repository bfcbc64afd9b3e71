"""Options and helpers shared by the role commands (btcli-style wallet flags, chain and drand)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from adapters.connect import ChainOptions, WalletOptions

console = Console(stderr=True)

WalletName = typer.Option("default", "--wallet.name", "--wallet-name", help="wallet (coldkey) name")
WalletHotkey = typer.Option("default", "--wallet.hotkey", "--wallet-hotkey", help="hotkey name")
WalletPath = typer.Option("~/.bittensor/wallets", "--wallet.path", "--wallet-path", help="wallets directory")
Network = typer.Option("embedded", "--network", "--subtensor.network",
                       help="'embedded' (in-process EVM), or a Bittensor network: finney, test, local, ws(s)://…")
Netuid = typer.Option(1, "--netuid", help="subnet uid")
RpcUrl = typer.Option(None, "--rpc-url", help="EVM JSON-RPC endpoint running the rollproof contracts (anvil, Bittensor EVM)")
Registry = typer.Option(None, "--registry", help="SubnetRegistry address (with --rpc-url)")
Ledger = typer.Option(None, "--ledger", help="ScoreLedger address (with --rpc-url)")
LedgerRpcUrl = typer.Option(None, "--ledger-rpc-url",
                            help="with a Bittensor --network: record the score ledger in the ScoreLedger contract at "
                                 "this EVM endpoint (the subtensor's EVM; needs --registry, --ledger, --evm-key)")
EvmKey = typer.Option(None, "--evm-key", envvar="ROLLPROOF_EVM_KEY", help="funded EVM account key (with --rpc-url)")
Drand = typer.Option(None, "--drand", help="'local' (default on EVM chains) or 'quicknet' (default on Bittensor)")
LocalSeed = typer.Option(None, "--local-drand-seed", help="seed of the local drand chain")
Model = typer.Option("smollm2", "--model", help="'smollm2', 'tiny' / 'tiny:SEED' or a local HF model directory")
LogLevel = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING")
Threads = typer.Option(None, "--threads", help="CPU threads torch may use (default: torch's own choice)")


def apply_threads(threads: Optional[int]) -> None:
    """--threads: checked before any work (one-line error, exit code 2), then torch.set_num_threads."""
    if threads is None:
        return
    if threads < 1:
        console.print(f"[red]error:[/red] --threads must be at least 1, got {threads}")
        raise typer.Exit(2)
    import torch

    torch.set_num_threads(threads)


def chain_options(network: str, netuid: int, rpc_url: Optional[str], registry: Optional[str],
                  ledger: Optional[str], evm_key: Optional[str], drand: Optional[str],
                  local_drand_seed: Optional[str], ledger_rpc_url: Optional[str] = None) -> ChainOptions:
    return ChainOptions(network=network, netuid=netuid, rpc_url=rpc_url, registry=registry, ledger=ledger,
                        evm_key=evm_key, drand=drand, local_drand_seed=local_drand_seed,
                        ledger_rpc_url=ledger_rpc_url)


def wallet_options(name: str, hotkey: str, path: str) -> WalletOptions:
    return WalletOptions(name=name, hotkey=hotkey, path=path)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
                        force=True)
    for noisy in ("web3", "urllib3", "botocore", "transformers", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event: the loop finishes its current step and exits. A second
    SIGINT interrupts at once (the journal makes that safe)."""
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
