"""`rollproof chain ...`: deploy the contracts to an EVM endpoint, manage validator permits and the
trainer, list checkpoint announcements and void one."""

from __future__ import annotations

import json

import typer

from rollproof.cli_common import App, Netuid, check_address, check_evm_key, console, fail, probe_rpc

app = App(help="Deploy and administer the rollproof contracts on an EVM.")
ADMIN_RPC_TIMEOUT_S = 30  # per request, and no retries: a stalled deploy says so instead of waiting minutes


def _admin(rpc_url: str, key: str):
    from eth_account import Account
    from web3 import Web3

    provider = Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": ADMIN_RPC_TIMEOUT_S},
                                 exception_retry_configuration=None)
    return Web3(provider), Account.from_key(key)


def _check_admin_args(rpc_url: str, admin_key: str, **addresses: str) -> None:
    """Formats first, then one bounded eth_chainId: a wrong key or an endpoint that never answers is one
    line within seconds."""
    check_evm_key(admin_key, "--admin-key")
    for flag, value in addresses.items():
        check_address(value, f"--{flag.replace('_', '-')}")
    probe_rpc(rpc_url)


@app.command()
def deploy(
    rpc_url: str = typer.Option(..., "--rpc-url", help="EVM JSON-RPC endpoint (anvil, Bittensor EVM: 964 mainnet, 945 testnet)"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY", help="funded deployer key"),
    netuid: int = Netuid,
) -> None:
    """Deploy SubnetRegistry and ScoreLedger from the checked-in artifacts; prints their addresses."""
    from adapters.chain.evm import EVMChain

    _check_admin_args(rpc_url, admin_key)
    w3, admin = _admin(rpc_url, admin_key)
    with console.status(f"deploying the contracts to {rpc_url}…"):
        registry, ledger = EVMChain.deploy(w3, admin, netuid)  # errors: one line, exit 2 (cli_common.guarded)
    print(json.dumps({"rpc_url": rpc_url, "netuid": netuid, "registry": registry, "ledger": ledger}))


@app.command()
def permit(
    uid: int = typer.Argument(..., min=0, help="uid to grant (or revoke) a validator permit"),
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY"),
    revoke: bool = typer.Option(False, "--revoke"),
) -> None:
    """Grant a validator permit (the registry's admin only)."""
    from eth_account import Account

    from adapters.chain.evm import EVMChain

    _check_admin_args(rpc_url, admin_key, registry=registry, ledger=ledger)
    chain = EVMChain.connect(rpc_url, registry, ledger)
    chain.set_validator_permit(uid, not revoke, admin=Account.from_key(admin_key))
    console.print(f"uid {uid}: validator permit {'revoked' if revoke else 'granted'}")


@app.command()
def trainer(
    hotkey: str = typer.Option(..., "--hotkey", help="the trainer's ss58 hotkey (it signs checkpoint manifests)"),
    trainer_address: str = typer.Option(..., "--trainer-address", help="the EVM account of the trainer's --evm-key"),
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY"),
) -> None:
    """Name the trainer (the registry's admin only): the one account that may announce checkpoints."""
    from eth_account import Account

    from adapters.chain.evm import EVMChain

    _check_ss58(hotkey)
    _check_admin_args(rpc_url, admin_key, registry=registry, ledger=ledger, trainer_address=trainer_address)
    chain = EVMChain.connect(rpc_url, registry, ledger)
    chain.set_trainer(hotkey, trainer_address, admin=Account.from_key(admin_key))
    console.print(f"trainer: {hotkey} (EVM {trainer_address})")


@app.command()
def announcements(
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
) -> None:
    """List the registry's checkpoint announcements, one JSON object a line (index, from_window,
    fingerprint, manifest_hash, location, block, voided_block: 0 when not voided)."""
    from adapters.chain.evm import EVMChain

    check_address(registry, "--registry")
    check_address(ledger, "--ledger")
    probe_rpc(rpc_url)
    chain = EVMChain.connect(rpc_url, registry, ledger)
    for i, a in enumerate(chain.checkpoint_announcements()):
        print(json.dumps({"index": i, "from_window": a.from_window, "fingerprint": a.fingerprint.hex(),
                          "manifest_hash": a.manifest_hash.hex(), "location": a.location, "block": a.block,
                          "voided_block": a.voided_block}))


@app.command()
def ledger(
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
) -> None:
    """Print the ScoreLedger's entries, one JSON object a line (validator_uid, window, uids, scores,
    verified_root, report_hash, block): the file `rollproof verify-checkpoint --ledger-file` reads
    for an offline audit."""
    from adapters.chain.evm import EVMChain
    from rollproof.localnet import ledger_json

    check_address(registry, "--registry")
    check_address(ledger, "--ledger")
    probe_rpc(rpc_url)
    chain = EVMChain.connect(rpc_url, registry, ledger)
    for event in chain.ledger_events():
        print(json.dumps(ledger_json(event)))


@app.command()
def void(
    index: int = typer.Argument(..., min=0, help="the announcement's index (`rollproof chain announcements`)"),
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY"),
) -> None:
    """Void a checkpoint announcement (the registry's admin only): nodes ignore it from
    ACTIVATION_WINDOWS after the window the void lands in, and the trainer may announce again after
    the last announcement not voided (docs/protocol.md section 15)."""
    from eth_account import Account

    from adapters.chain.evm import EVMChain
    from verification.challenge import window_of_block
    from verification.constants import ACTIVATION_WINDOWS

    _check_admin_args(rpc_url, admin_key, registry=registry, ledger=ledger)
    chain = EVMChain.connect(rpc_url, registry, ledger)
    held = chain.checkpoint_announcements()
    if index >= len(held):
        fail(f"announcement {index}: the registry holds {len(held)} announcement(s) (indices 0 to {len(held) - 1})")
    if held[index].voided_block:
        fail(f"announcement {index} was already voided in block {held[index].voided_block}")
    chain.void_announcement(index, admin=Account.from_key(admin_key))
    voided = chain.checkpoint_announcements()[index].voided_block
    console.print(f"announcement {index} (from window {held[index].from_window}) voided in block {voided}: "
                  f"ignored from window {window_of_block(voided) + ACTIVATION_WINDOWS} on")


def _check_ss58(hotkey: str) -> None:
    from bittensor.sp_core import Keypair

    try:
        Keypair(ss58_address=hotkey)
    except Exception:  # noqa: BLE001 - the SDK raises several types for a bad address
        fail(f"--hotkey {hotkey}: not an ss58 address")
