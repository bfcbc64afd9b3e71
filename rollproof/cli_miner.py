"""`rollproof miner register` and `rollproof miner run`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rich.markup import escape

from rollproof.cli_common import (
    DEFAULT_STORE, Announcer, App, ChainWait, Device, Drand, Engine, EngineMemory, EvmKey, Ledger, LocalSeed, LogLevel, Model, Netuid, Network, Registry, RpcUrl,
    Threads, WalletHotkey, WalletName, WalletPath, apply_threads, chain_options, check_chain_args, check_device,
    MetricsHost, MetricsPort, NewChain, StatusPort, check_directory, check_engine, check_http_url, check_model, check_store,
    console, fail, journal_dir, serve_telemetry, setup_logging, stop_on_signals, wallet_options,
)
from miner.defaults import DEFAULT_KEEP_BUNDLES
from verification.constants import BASE_GENERATION
from verification.errors import RollproofError

app = App(help="Register a miner and produce verifiable rollouts.")
log = logging.getLogger("rollproof.miner")


@app.command()
def register(
    wallet_name: str = WalletName, wallet_hotkey: str = WalletHotkey, wallet_path: str = WalletPath,
    network: str = Network, netuid: int = Netuid, rpc_url: Optional[str] = RpcUrl,
    registry: Optional[str] = Registry, ledger: Optional[str] = Ledger, evm_key: Optional[str] = EvmKey,
    max_burn: Optional[float] = typer.Option(
        None, "--max-burn", min=0.0,
        help="Bittensor: the most TAO the coldkey pays; the current burn is shown and a higher one refused"),
    log_level: str = LogLevel,
) -> None:
    """Register the hotkey on the subnet (Bittensor: burned register paid by the coldkey, at most
    --max-burn TAO)."""
    from adapters.chain.bittensor_chain import RAO_PER_TAO, BittensorChain, tao
    from adapters.connect import load_hotkey, open_chain

    setup_logging(log_level)
    opts = check_chain_args(chain_options(network, netuid, rpc_url, registry, ledger, evm_key, None, None))
    wallet = wallet_options(wallet_name, wallet_hotkey, wallet_path)
    chain = None
    try:
        keypair, dev = load_hotkey(wallet, allow_dev=opts.is_embedded)
        if dev:
            console.print(f"[yellow]no wallet {wallet_name}/{wallet_hotkey}: using the development key "
                          f"//rollproof/{wallet_name}/{wallet_hotkey}[/yellow]")
        chain = open_chain(opts, keypair, wallet)
        if isinstance(chain, BittensorChain) and chain.uid_of(keypair.ss58_address) is None:
            burn = chain.burn_cost()
            if max_burn is None:
                raise RollproofError(f"registration on netuid {netuid} costs {tao(burn)} now (burned from the "
                                     f"coldkey): pass --max-burn with the most TAO you will pay")
            limit = round(max_burn * RAO_PER_TAO)
            if burn > limit:
                raise RollproofError(f"registration on netuid {netuid} costs {tao(burn)} now, above --max-burn "
                                     f"{tao(limit)}: nothing was paid")
            console.print(f"registering on netuid {netuid}: burn {tao(burn)} (at most {tao(limit)})")
            uid = chain.register(keypair, max_burn_rao=limit)  # re-read just before paying
        else:
            uid = chain.register(keypair)
    except RollproofError as exc:
        fail(str(exc))
    finally:
        if chain is not None and hasattr(chain, "close"):
            chain.close()
    console.print(f"hotkey {keypair.ss58_address} has uid {uid} on netuid {netuid} ({chain.name})")
    if opts.is_embedded:
        console.print("[dim]the embedded chain lives in this process only; `rollproof miner run` registers on it by itself[/dim]")


@app.command()
def run(
    wallet_name: str = WalletName, wallet_hotkey: str = WalletHotkey, wallet_path: str = WalletPath,
    network: str = Network, netuid: int = Netuid, rpc_url: Optional[str] = RpcUrl,
    registry: Optional[str] = Registry, ledger: Optional[str] = Ledger, evm_key: Optional[str] = EvmKey,
    announcer: Optional[str] = Announcer,
    drand: Optional[str] = Drand, local_drand_seed: Optional[str] = LocalSeed, model: str = Model,
    store: str = typer.Option(DEFAULT_STORE, "--store", help="bundle store: a directory or s3://BUCKET/PREFIX"),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint (R2, MinIO)"),
    public_url: Optional[str] = typer.Option(
        None, "--public-url",
        help="public HTTPS address of the s3:// bucket (R2 public bucket, custom domain): committed instead of "
             "s3://, so every validator reads bundles without credentials"),
    groups: Optional[str] = typer.Option(None, "--groups", hidden=True,
                                         help="gone: the checkpoint's generation params fix the groups per window"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, max=4096,
                                             help="rollouts decoded at once (default: 16 with hf, 256 with vllm)"),
    windows: Optional[int] = typer.Option(None, "--windows", min=1, help="stop after this many windows (default: run until stopped; 1 on the embedded chain)"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="journal directory (default ~/.rollproof/miner/...)"),
    keep_bundles: int = typer.Option(DEFAULT_KEEP_BUNDLES, "--keep-bundles", min=1,
                                     help="windows whose bundle bytes stay in the journal (the store keeps what it published)"),
    checkpoint_root: list[Path] = typer.Option([Path(DEFAULT_STORE)], "--checkpoint-root",
                                               help="directories file:// checkpoint locations may point into"),
    new_chain: bool = NewChain,
    threads: Optional[int] = Threads,
    device: str = Device,
    engine: str = Engine,
    engine_memory: Optional[float] = EngineMemory,
    chain_wait: Optional[float] = ChainWait,
    metrics_port: Optional[int] = MetricsPort, metrics_host: str = MetricsHost, status_port: Optional[int] = StatusPort,
    log_level: str = LogLevel,
) -> None:
    """Each window: derive problems, generate GRPO groups with proofs, publish the signed bundle,
    commit its hash and location on chain. At start the hotkey's registration (and on EVM chains
    the --evm-key's ownership of its uid) is checked before the model loads; an unreachable chain is
    waited for (--chain-wait). Ctrl-C stops after the current window."""
    apply_threads(threads)
    setup_logging(log_level)
    # every argument before the model loads or a window is generated (a bad one is one line, exit 2)
    if groups is not None:
        fail(f"--groups {groups}: no longer an option: the generation params of the window's checkpoint fix "
             f"the groups of every bundle (the base model's: {BASE_GENERATION['groups']}); a bundle of another "
             f"count is rejected")
    device = check_device(device)
    check_engine(engine)
    check_model(model)
    check_store(store)
    check_directory(state_dir, "--state-dir")
    for root in checkpoint_root:  # read from (file:// checkpoints): a file there is a typo, not a store
        if root.expanduser().exists() and not root.expanduser().is_dir():
            fail(f"--checkpoint-root {root}: not a directory")
    check_http_url(s3_endpoint, "--s3-endpoint", "an S3 endpoint", "https://ACCOUNT.r2.cloudflarestorage.com")
    opts = check_chain_args(chain_options(network, netuid, rpc_url, registry, ledger, evm_key, drand, local_drand_seed,
                                          announcer=announcer),
                            probe=False)  # reachability: waited for below (rollproof/startup.py)
    telemetry = serve_telemetry("miner", metrics_host, metrics_port, status_port)  # bound before the chain or model
    # the node's stack (torch, bittensor) only once the arguments are known to be good
    from miner.service import Miner
    from adapters.beacons import BeaconCache
    from adapters.connect import beacon_source, default_state_dir, load_hotkey
    from adapters.checkpoints import ModelResolver
    from adapters.fetch import Fetcher
    from adapters.storage import make_s3_client, open_store
    from verification.commitment import MAX_BASE_BYTES
    from verification.model import load_model
    from miner.engines import open_engine
    from rollproof.startup import start_chain
    from rollproof.telemetry import replay_verdicts, role_page

    wallet = wallet_options(wallet_name, wallet_hotkey, wallet_path)
    if windows is None and opts.is_embedded:
        windows = 1
    stop = stop_on_signals()
    keypair, dev = load_hotkey(wallet, allow_dev=opts.is_embedded)
    if dev:
        log.warning("no wallet %s/%s: using the development key //rollproof/%s/%s",
                    wallet_name, wallet_hotkey, wallet_name, wallet_hotkey)

    def startup_check(chain) -> int:
        if opts.is_embedded:  # it lives in this process: nobody else can register the hotkey on it
            uid = chain.register(keypair)
            log.info("embedded chain: registered %s as uid %d", keypair.ss58_address, uid)
            return uid
        # registered, and the EVM key owns the uid: refusals that no retry fixes, before the model loads
        return chain.preflight(keypair)

    started = start_chain(opts, keypair, wallet, startup_check, wait_s=chain_wait, stop=stop)
    if started is None:
        console.print("stopped before the chain answered")
        return
    chain = started.chain
    root = (state_dir or default_state_dir("miner", wallet, netuid)).expanduser()
    journal = root / started.identity
    if not opts.is_embedded:
        log.info("hotkey %s holds uid %d on netuid %d (%s)", keypair.ss58_address, started.checked, netuid, chain.name)
        # a changed genesis: one line, before the model loads (the embedded chain is new at every run)
        journal = journal_dir(root, started.identity, new_chain=new_chain)
    telemetry.page.set(role_page("miner", journal))
    with console.status(f"loading model {model} on {device}…"):
        lm = load_model(model, device)
    log.info("model %s, fingerprint %s", lm.name, lm.fingerprint.hex())
    with console.status(f"starting the {engine} engine on {device}…"):
        gen_engine = open_engine(engine, lm, batch_size=batch_size, device=device, memory_fraction=engine_memory)
    log.info("engine %s on %s", engine, device)
    beacons = beacon_source(opts, chain)
    s3 = make_s3_client(s3_endpoint) if s3_endpoint else None
    from trainer.replay_node import CheckpointReplayer  # miners follow validators' rule: replay before use

    checkpoint_fetcher = Fetcher(file_roots=checkpoint_root, s3_client=s3)
    registry = telemetry.registry
    replayer = CheckpointReplayer(chain, lm, checkpoint_fetcher, registry=registry, role="miner")
    resolver = ModelResolver(chain, lm, checkpoint_fetcher, registry=registry, role="miner", replay=replayer)
    telemetry.page.set(role_page("miner", journal, replays=lambda: replay_verdicts(replayer, resolver)))
    bundle_store = open_store(store, endpoint_url=s3_endpoint, public_url=public_url)
    if public_url is not None and opts.is_bittensor and len(bundle_store.base_location()) > MAX_BASE_BYTES:
        raise RollproofError(f"the committed base {bundle_store.base_location()} is {len(bundle_store.base_location())} "
                             f"bytes; a subtensor commitment leaves {MAX_BASE_BYTES}: shorten --public-url or the "
                             f"store prefix")
    miner = Miner(chain, keypair, lm, bundle_store, beacons,
                  journal, beacon_cache=BeaconCache(root / "beacons"), keep_bundles=keep_bundles, resolver=resolver,
                  engine=gen_engine, registry=registry)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        def tokens_bar(window: int):
            task = progress.add_task(f"window {window}", total=miner.n_groups * miner.lm.generation.group_size
                                      * miner.lm.generation.max_new_tokens)
            return lambda n: progress.advance(task, n)

        def report(rec):
            console.print(f"window {rec.window}: [bold]{rec.stage}[/bold] {rec.n_groups} groups, "
                          f"{rec.n_tokens} tokens, bundle {rec.bundle_hash[:16]} at {escape(rec.location)} "
                          f"{escape(rec.detail)}")

        try:
            records = miner.run(stop, max_windows=windows, on_window=report, on_tokens_factory=tokens_bar,
                                preflight=False)  # start_chain ran it
        finally:
            gen_engine.close()
    committed = [r for r in records if r.stage == "committed"]
    if committed and committed[-1].location.startswith("file://"):
        console.print(f"audit it offline: rollproof verify {escape(committed[-1].location[len('file://'):])} "
                      f"--model {escape(model)}", soft_wrap=True)
