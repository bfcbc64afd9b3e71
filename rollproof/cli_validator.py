"""`rollproof validator run`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from rollproof.cli_common import (
    Drand, EvmKey, Ledger, LedgerRpcUrl, LocalSeed, LogLevel, Model, Netuid, Network, Registry, RpcUrl, Threads,
    WalletHotkey, WalletName, WalletPath, apply_threads, chain_options, console, setup_logging, stop_on_signals,
    wallet_options,
)
from verification.errors import RollproofError

app = typer.Typer(no_args_is_help=True, help="Verify miners' bundles, score them, write weights.")
log = logging.getLogger("rollproof.validator")


def window_table(result, names: dict[int, tuple[str, str]] | None = None) -> Table:
    table = Table(title=f"window {result.window} (opening round {result.report['opening_round']})")
    table.add_column("uid", no_wrap=True)
    table.add_column("miner", no_wrap=True)
    if names:
        table.add_column("role", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("rollouts", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("weight", justify="right", no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=52)
    for m in result.report["miners"]:
        ok = m["reason"] == "ok"
        row = [str(m["uid"]), names[m["uid"]][0] if names else m["hotkey"][:10] + "…"]
        if names:
            row.append(names[m["uid"]][1])
        row += [f"[green]{m['reason']}[/green]" if ok else f"[red]{m['reason']}[/red]", str(m["unique_rollouts"]),
                f"{m['score']:.1f}", str(m["weight"]), m["detail"]]
        table.add_row(*row)
    return table


@app.command()
def run(
    wallet_name: str = WalletName, wallet_hotkey: str = WalletHotkey, wallet_path: str = WalletPath,
    network: str = Network, netuid: int = Netuid, rpc_url: Optional[str] = RpcUrl,
    registry: Optional[str] = Registry, ledger: Optional[str] = Ledger, evm_key: Optional[str] = EvmKey,
    ledger_rpc_url: Optional[str] = LedgerRpcUrl,
    drand: Optional[str] = Drand, local_drand_seed: Optional[str] = LocalSeed, model: str = Model,
    file_root: list[Path] = typer.Option([Path("~/.rollproof/store")], "--file-root",
                                         help="directories file:// bundle and checkpoint locations may point into"),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint for s3:// locations"),
    fetch_timeout: float = typer.Option(30.0, "--fetch-timeout", help="seconds per bundle download"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    windows: Optional[int] = typer.Option(None, "--windows", min=1, help="stop after this many windows"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="journal directory (default ~/.rollproof/validator/...)"),
    keep_bundles: int = typer.Option(48, "--keep-bundles", min=0,
                                     help="finished windows whose fetched bundles stay on disk for audit; 0 keeps all"),
    threads: Optional[int] = Threads,
    log_level: str = LogLevel,
) -> None:
    """Follow windows: after each deadline, open it with the pinned drand round, verify every
    committed bundle, score, write the ledger entry and weights. Ctrl-C stops after the current window."""
    from adapters.beacons import BeaconCache
    from adapters.connect import beacon_source, default_state_dir, load_hotkey, open_chain
    from adapters.storage import Fetcher, make_s3_client
    from adapters.checkpoints import ModelResolver
    from validator.service import Validator
    from verification.model import load_model

    apply_threads(threads)
    setup_logging(log_level)
    opts = chain_options(network, netuid, rpc_url, registry, ledger, evm_key, drand, local_drand_seed, ledger_rpc_url)
    wallet = wallet_options(wallet_name, wallet_hotkey, wallet_path)
    stop = stop_on_signals()
    try:
        keypair, dev = load_hotkey(wallet, allow_dev=opts.is_embedded)
        if dev:
            log.warning("no wallet %s/%s: using the development key", wallet_name, wallet_hotkey)
        with console.status(f"loading model {model}…"):
            lm = load_model(model)
        chain = open_chain(opts, keypair, wallet)
        if opts.ledger_rpc_url:
            log.info("score ledger on %s: EVM-registry uid %s", opts.ledger_rpc_url, chain.prepare_ledger(keypair))
        if opts.is_embedded:
            uid = chain.register(keypair)
            chain.set_validator_permit(uid)
            log.warning("embedded chain: no miners run in this process; use `rollproof localnet` for a whole subnet")
        beacons = beacon_source(opts, chain)
        root = (state_dir or default_state_dir("validator", wallet, netuid)).expanduser()
        s3 = make_s3_client(s3_endpoint, timeout=fetch_timeout) if s3_endpoint else None
        fetcher = Fetcher(file_roots=file_root, s3_client=s3, timeout=fetch_timeout)
        resolver = ModelResolver(chain, lm, fetcher)
        validator = Validator(chain, keypair, lm, beacons, fetcher,
                              root / chain.identity(), beacon_cache=BeaconCache(root / "beacons"),
                              batch_size=batch_size, keep_bundles=keep_bundles or None, resolver=resolver)
        log.info("validator %s (uid %s) on %s netuid %d", keypair.ss58_address, chain.uid_of(keypair.ss58_address),
                 chain.name, netuid)
        validator.run(stop, max_windows=windows, on_result=lambda r: console.print(window_table(r)))
    except RollproofError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
