"""`rollproof validator run`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from validator.defaults import DEFAULT_KEEP_BUNDLES
from verification.constants import FETCH_TIMEOUT_S
from rollproof.cli_common import (
    DEFAULT_STORE, Announcer, App, ChainWait, Device, Drand, EvmKey, Ledger, LedgerRpcUrl, LocalSeed, LogLevel, Model, Netuid, Network, Registry,
    RpcUrl, Threads, WalletHotkey, WalletName, WalletPath, apply_threads, chain_options, check_chain_args, check_device,
    MetricsHost, MetricsPort, NewChain, StatusPort, check_directory, check_model, check_http_url, console, fail, journal_dir,
    serve_telemetry, setup_logging, stop_on_signals, wallet_options,
)

app = App(help="Verify miners' bundles, score them, write weights.")
DEFAULT_FILE_ROOT = Path(DEFAULT_STORE)  # the miners' default --store
# fetch_failed details of a file:// location outside every --file-root (adapters/fetch.py)
OUTSIDE_FILE_ROOTS = "outside the directories this validator reads"
EMBEDDED_NOTHING_TO_VALIDATE = (
    "the embedded chain lives in this process only, so no miner can commit to it and there is nothing to "
    "validate: run `rollproof localnet` for a whole subnet on this machine, or pass --rpc-url (anvil, an EVM) "
    "or --network (Bittensor)")
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
        # hotkey and detail carry miner-chosen text (locations, error messages): never rich markup
        row = [str(m["uid"]), escape(names[m["uid"]][0] if names else m["hotkey"][:10] + "…")]
        if names:
            row.append(names[m["uid"]][1])
        row += [f"[green]{m['reason']}[/green]" if ok else f"[red]{m['reason']}[/red]", str(m["credited_rollouts"]),
                f"{m['score']:.1f}", str(m["weight"]), escape(m["detail"])]
        table.add_row(*row)
    return table


def window_warning(report: dict, file_roots: list[Path], model: str) -> str | None:
    """One line naming the likely cause when every miner of a window failed the same way on this
    validator's side: every bundle fetch failed (file:// outside --file-root, or any fetch), or every
    bundle names another model than --model. None otherwise (including a window without miners)."""
    miners = report.get("miners") or []
    if not miners:
        return None
    window, n = report.get("window"), len(miners)
    reasons = {m.get("reason") for m in miners}
    if reasons == {"fetch_failed"}:
        first = miners[0]
        if all(OUTSIDE_FILE_ROOTS in (m.get("detail") or "") for m in miners):
            roots = ", ".join(str(r) for r in file_roots) or "none"
            return (f"window {window}: every miner's bundle ({n}) is outside --file-root ({roots}), e.g. "
                    f"{first.get('location', '?')}: a validator's --file-root must contain the miners' --store "
                    f"directories")
        return (f"window {window}: every miner's bundle ({n}) failed to fetch, e.g. uid {first.get('uid')}: "
                f"{first.get('detail')} (check this validator's network, --file-root, --s3-endpoint, "
                f"--allow-private-fetch)")
    if reasons == {"wrong_model"}:
        fingerprint = str(report.get("model_fingerprint", ""))[:16]
        return (f"window {window}: every miner's bundle ({n}) names another model than this validator's --model "
                f"{model} (fingerprint {fingerprint}…): load the model the subnet runs")
    return None


def _print_window(result, file_roots: list[Path], model: str) -> None:
    console.print(window_table(result))
    warning = window_warning(result.report, file_roots, model) if result.report else None
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True, highlight=False, emoji=False)
        log.debug(warning)


@app.command()
def run(
    wallet_name: str = WalletName, wallet_hotkey: str = WalletHotkey, wallet_path: str = WalletPath,
    network: str = Network, netuid: int = Netuid, rpc_url: Optional[str] = RpcUrl,
    registry: Optional[str] = Registry, ledger: Optional[str] = Ledger, evm_key: Optional[str] = EvmKey,
    announcer: Optional[str] = Announcer,
    ledger_rpc_url: Optional[str] = LedgerRpcUrl,
    drand: Optional[str] = Drand, local_drand_seed: Optional[str] = LocalSeed, model: str = Model,
    file_root: list[Path] = typer.Option([DEFAULT_FILE_ROOT], "--file-root",
                                         help="directories file:// bundle and checkpoint locations may point into"),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint for s3:// locations"),
    fetch_timeout: float = typer.Option(float(FETCH_TIMEOUT_S), "--fetch-timeout", min=0.1, max=3600.0,
                                        help="most seconds per bundle download (the deadline is shorter where the "
                                             "window's bundle size bound allows: 5 s + bound / 256 KiB/s)"),
    allow_private_fetch: bool = typer.Option(
        False, "--allow-private-fetch",
        help="fetch miners' http(s) locations on loopback and private addresses too (local networks only: "
             "on a public subnet it lets miners make this validator probe its own network)"),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, max=4096,
        help="rollouts per recompute forward, from any checked groups and miners (default: 16 on a CPU, on an accelerator as many as the memory bound allows)"),
    windows: Optional[int] = typer.Option(None, "--windows", min=1, help="stop after this many windows"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="journal directory (default ~/.rollproof/validator/...)"),
    keep_bundles: int = typer.Option(DEFAULT_KEEP_BUNDLES, "--keep-bundles", min=0,
                                     help="finished windows whose fetched bundles stay on disk for audit; 0 keeps all"),
    new_chain: bool = NewChain,
    threads: Optional[int] = Threads,
    device: str = Device,
    chain_wait: Optional[float] = ChainWait,
    metrics_port: Optional[int] = MetricsPort, metrics_host: str = MetricsHost, status_port: Optional[int] = StatusPort,
    log_level: str = LogLevel,
) -> None:
    """Follow windows: after each deadline, open it with the pinned drand round, verify every
    committed bundle, score, write the ledger entry and weights. At start the hotkey's registration
    and validator permit (on EVM chains also the --evm-key's ownership of the uid; on Bittensor the
    subnet's weights version key) are checked before the model loads; an unreachable chain is waited for (--chain-wait). Ctrl-C stops after
    the current window."""
    apply_threads(threads)
    setup_logging(log_level)
    opts = chain_options(network, netuid, rpc_url, registry, ledger, evm_key, drand, local_drand_seed, ledger_rpc_url,
                         announcer)
    if opts.is_embedded:
        fail(EMBEDDED_NOTHING_TO_VALIDATE)
    # every argument before the model loads or the chain is followed (a bad one is one line, exit 2)
    device = check_device(device)
    check_model(model)
    check_directory(state_dir, "--state-dir")
    for root in file_root:
        if root.expanduser().exists() and not root.expanduser().is_dir():
            fail(f"--file-root {root}: not a directory")
    check_http_url(s3_endpoint, "--s3-endpoint", "an S3 endpoint", "https://ACCOUNT.r2.cloudflarestorage.com")
    opts = check_chain_args(opts, probe=False)  # reachability: waited for below (rollproof/startup.py)
    telemetry = serve_telemetry("validator", metrics_host, metrics_port, status_port)  # bound before the chain or model
    # the node's stack (torch, bittensor) only once the arguments are known to be good
    from adapters.beacons import BeaconCache
    from adapters.connect import beacon_source, default_state_dir, load_hotkey
    from rollproof.startup import start_chain
    from adapters.fetch import Fetcher
    from adapters.storage import make_s3_client
    from adapters.checkpoints import ModelResolver
    from rollproof.telemetry import replay_verdicts, role_page
    from validator.service import Validator
    from verification.model import load_model

    wallet = wallet_options(wallet_name, wallet_hotkey, wallet_path)
    stop = stop_on_signals()
    keypair, _ = load_hotkey(wallet, allow_dev=False)
    # registered, permit, EVM key: refusals no retry fixes, before the model loads
    started = start_chain(opts, keypair, wallet, lambda chain: chain.preflight(keypair, validator=True),
                          wait_s=chain_wait, stop=stop)
    if started is None:
        console.print("stopped before the chain answered")
        return
    chain, uid = started.chain, started.checked
    root = (state_dir or default_state_dir("validator", wallet, netuid)).expanduser()
    journal = journal_dir(root, started.identity, new_chain=new_chain)  # a changed genesis: one line, before the model
    telemetry.page.set(role_page("validator", journal))
    with console.status(f"loading model {model} on {device}…"):
        lm = load_model(model, device)
    if opts.ledger_rpc_url:
        log.info("score ledger on %s: EVM-registry uid %s", opts.ledger_rpc_url, chain.prepare_ledger(keypair))
    beacons = beacon_source(opts, chain)
    s3 = make_s3_client(s3_endpoint, timeout=fetch_timeout) if s3_endpoint else None
    fetcher = Fetcher(file_roots=file_root, s3_client=s3, timeout=fetch_timeout, allow_private=allow_private_fetch)
    for missing in (r for r in file_root if r != DEFAULT_FILE_ROOT and not r.expanduser().is_dir()):
        log.warning("--file-root %s does not exist: no file:// location can be read under it", missing)
    from trainer.replay_node import CheckpointReplayer  # every checkpoint is replayed before it is used

    registry = telemetry.registry
    replayer = CheckpointReplayer(chain, lm, fetcher, registry=registry, role="validator")
    resolver = ModelResolver(chain, lm, fetcher, registry=registry, role="validator", replay=replayer)
    telemetry.page.set(role_page("validator", journal, replays=lambda: replay_verdicts(replayer, resolver)))
    validator = Validator(chain, keypair, lm, beacons, fetcher,
                          journal, beacon_cache=BeaconCache(root / "beacons"),
                          batch_size=batch_size, keep_bundles=keep_bundles or None, resolver=resolver,
                          registry=registry)
    log.info("validator %s (uid %s) on %s netuid %d", keypair.ss58_address, uid, chain.name, netuid)
    validator.run(stop, max_windows=windows, on_result=lambda r: _print_window(r, file_root, model),
                  preflight=False)  # checked at start (rollproof/startup.py)
