"""`rollproof trainer run`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from rollproof.cli_common import (
    DEFAULT_STORE, Announcer, App, ChainWait, Device, Drand, EvmKey, Ledger, LedgerRpcUrl, LocalSeed, LogLevel, MetricsHost,
    MetricsPort, Model, NewChain, Netuid, Network, Registry, RpcUrl, StatusPort, Threads, WalletHotkey, WalletName, WalletPath,
    apply_threads, chain_options, check_chain_args, check_device, check_directory, check_model, check_http_url, check_ss58,
    check_store, console, fail, journal_dir, serve_telemetry, setup_logging, stop_on_signals, wallet_options,
)
from trainer.defaults import GATE_MARGIN, HELDOUT_PROBLEMS, LR, PUBLISH_EVERY
from verification.errors import RollproofError

app = App(help="Train the next checkpoint on verified rollouts.")
log = logging.getLogger("rollproof.trainer")


@app.command()
def run(
    wallet_name: str = WalletName, wallet_hotkey: str = WalletHotkey, wallet_path: str = WalletPath,
    network: str = Network, netuid: int = Netuid, rpc_url: Optional[str] = RpcUrl,
    registry: Optional[str] = Registry, ledger: Optional[str] = Ledger, evm_key: Optional[str] = EvmKey,
    announcer: Optional[str] = Announcer,
    ledger_rpc_url: Optional[str] = LedgerRpcUrl,
    drand: Optional[str] = Drand, local_drand_seed: Optional[str] = LocalSeed, model: str = Model,
    validator_state: Path = typer.Option(..., "--validator-state", file_okay=False,
                                         help="journal of a validator on this machine (its --state-dir/<chain identity>)"),
    validator_hotkey: str = typer.Option(..., "--validator-hotkey",
                                         help="that validator's hotkey: each report must match its ledger entry, and "
                                              "every checkpoint's training record names it (a replay checks the "
                                              "reports against its ledger entries on chain)"),
    store: str = typer.Option(DEFAULT_STORE, "--store", help="where checkpoints are published: a directory or s3://…"),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="S3-compatible endpoint (R2, MinIO)"),
    public_url: Optional[str] = typer.Option(
        None, "--public-url",
        help="public HTTPS address of the s3:// bucket: announced instead of s3://, so every miner and validator "
             "fetches checkpoints without credentials"),
    lr: float = typer.Option(LR, "--lr", min=1e-9, max=1.0, help="AdamW learning rate of the LoRA adapter"),
    publish_every: int = typer.Option(PUBLISH_EVERY, "--publish-every", min=1, help="applied steps between candidate checkpoints"),
    heldout: int = typer.Option(HELDOUT_PROBLEMS, "--heldout", min=2, help="held-out problems of the acceptance gate"),
    gate_margin: float = typer.Option(GATE_MARGIN, "--gate-margin", min=0.0, max=1.0,
                                      help="withhold a candidate whose held-out reward is below its parent's by more"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="journal directory (default ~/.rollproof/trainer/...)"),
    windows: Optional[int] = typer.Option(None, "--windows", min=1, help="stop after this many windows"),
    threads: Optional[int] = Threads,
    device: str = Device,
    chain_wait: Optional[float] = ChainWait,
    new_chain: bool = NewChain,
    metrics_port: Optional[int] = MetricsPort, metrics_host: str = MetricsHost, status_port: Optional[int] = StatusPort,
    log_level: str = LogLevel,
) -> None:
    """Each scored window: take the rows the validator accepted (tied to its report and ledger
    entry), run a GRPO step with circuit breakers, and every --publish-every steps gate a candidate
    on the held-out set and announce it on chain. The wallet's hotkey signs the manifests and must be
    the registry's trainer (`rollproof chain trainer`). Ctrl-C stops after the current window."""
    apply_threads(threads)
    setup_logging(log_level)
    device = check_device(device)
    opts = chain_options(network, netuid, rpc_url, registry, ledger, evm_key, drand, local_drand_seed, ledger_rpc_url,
                         announcer)
    if opts.is_embedded:
        fail("the trainer follows a chain other processes write to: use --rpc-url (or `rollproof localnet`, "
             "which runs the trainer on the embedded chain)")
    # every argument before the chain is read or the model loads (a bad one is one line, exit 2)
    check_model(model)
    check_store(store)
    check_directory(state_dir, "--state-dir")
    if not validator_state.expanduser().is_dir():
        fail(f"--validator-state {validator_state}: no such directory (the validator's --state-dir joined "
             f"with its chain identity)")
    check_ss58(validator_hotkey, "--validator-hotkey")
    check_http_url(s3_endpoint, "--s3-endpoint", "an S3 endpoint", "https://ACCOUNT.r2.cloudflarestorage.com")
    if public_url is not None:
        if not store.startswith("s3://"):
            fail("--public-url goes with an s3:// store (--store s3://BUCKET/PREFIX)")
        from adapters.storage import check_public_url
        try:
            check_public_url(public_url)
        except RollproofError as exc:
            fail(f"--public-url: {exc}")
    opts = check_chain_args(opts, probe=False)  # reachability: waited for below (rollproof/startup.py)
    telemetry = serve_telemetry("trainer", metrics_host, metrics_port, status_port)  # bound before the chain or model
    from adapters.storage import open_store
    from verification.announcement import MAX_ANNOUNCEMENT_BASE_BYTES
    try:
        checkpoint_store = open_store(store, endpoint_url=s3_endpoint, public_url=public_url)
    except RollproofError as exc:
        fail(f"--store {store}: {exc}")
    base = checkpoint_store.base_location()
    if len(base.encode("utf-8")) > MAX_ANNOUNCEMENT_BASE_BYTES:
        fail(f"the announced base {base} is {len(base.encode('utf-8'))} bytes; an announcement leaves "
             f"{MAX_ANNOUNCEMENT_BASE_BYTES}: shorten --store, --public-url or the store prefix")
    # the node's stack (torch, bittensor) only once the arguments are known to be good
    from adapters.connect import default_state_dir, load_hotkey
    from rollproof.startup import start_chain
    from rollproof.telemetry import role_page
    from trainer.service import Trainer, TrainerConfig
    from trainer.sources import ValidatorJournal
    from trainer.step import TrainConfig
    from verification.model import load_model

    wallet = wallet_options(wallet_name, wallet_hotkey, wallet_path)
    stop = stop_on_signals()
    try:
        keypair, _ = load_hotkey(wallet, allow_dev=False)

        def startup_check(chain) -> ValidatorJournal:  # refusals no retry fixes, before the model loads
            named = chain.trainer_hotkey()
            if named != keypair.ss58_address:
                if opts.is_bittensor and not opts.ledger_rpc_url:
                    raise RollproofError(f"the checkpoint announcer (the subnet owner's hotkey, or --announcer) is {named}, "
                                         f"not {keypair.ss58_address}: run the trainer with that hotkey's wallet")
                raise RollproofError(f"the registry's trainer is {named}, not {keypair.ss58_address}: the deployer "
                                     f"runs `rollproof chain trainer --hotkey {keypair.ss58_address} --trainer-address … …`")
            return ValidatorJournal(validator_state, chain, validator_hotkey)

        started = start_chain(opts, keypair, wallet, startup_check, wait_s=chain_wait, stop=stop)
        if started is None:
            console.print("stopped before the chain answered")
            return
        chain, source = started.chain, started.checked
        root = (state_dir or default_state_dir("trainer", wallet, netuid)).expanduser()
        journal = journal_dir(root, started.identity, new_chain=new_chain)  # a changed genesis: one line, before the model
        telemetry.page.set(role_page("trainer", journal))
        with console.status(f"loading model {model} on {device}…"):
            lm = load_model(model, device)
        config = TrainerConfig(publish_every=publish_every, heldout_problems=heldout, gate_margin=gate_margin,
                               train=TrainConfig(lr=lr))
        trainer = Trainer(chain, keypair, lm, checkpoint_store, journal, config,
                          validator=(source.validator_uid, validator_hotkey), registry=telemetry.registry)

        def report(rec, pub) -> None:
            console.print(f"window {rec.window}: {rec.rows} rows, signal {rec.signal_rate:.0%}, "
                          f"{'step applied' if rec.step and rec.step['applied'] else escape(rec.note)}")
            if pub is not None:
                greedy = "" if pub.greedy is None else f", greedy {pub.greedy:.3f} (parent {pub.parent_greedy:.3f})"
                console.print(f"  checkpoint v{pub.version} {pub.stage} for window {pub.from_window}: held-out "
                              f"{pub.heldout:.3f} (parent {pub.parent_heldout:.3f}, chance {pub.chance:.3f}){greedy} "
                              f"{escape(pub.note)}")

        trainer.run(stop, source, max_windows=windows, on_window=report)
    except RollproofError as exc:
        fail(str(exc))
