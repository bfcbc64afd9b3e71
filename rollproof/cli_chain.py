"""`rollproof chain ...`: deploy the contracts to an EVM endpoint and manage validator permits."""

from __future__ import annotations

import json

import typer

from rollproof.cli_common import console
from verification.errors import RollproofError

app = typer.Typer(no_args_is_help=True, help="Deploy and administer the rollproof contracts on an EVM.")


def _admin(rpc_url: str, key: str):
    from eth_account import Account
    from web3 import Web3

    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30})), Account.from_key(key)


@app.command()
def deploy(
    rpc_url: str = typer.Option(..., "--rpc-url", help="EVM JSON-RPC endpoint (anvil, Bittensor EVM 945/964)"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY", help="funded deployer key"),
    netuid: int = typer.Option(1, "--netuid"),
) -> None:
    """Deploy SubnetRegistry and ScoreLedger from the checked-in artifacts; prints their addresses."""
    from adapters.chain.evm import EVMChain
    from verification.errors import ChainError

    try:
        w3, admin = _admin(rpc_url, admin_key)
        registry, ledger = EVMChain.deploy(w3, admin, netuid)
    except (RollproofError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - web3 transport errors
        console.print(f"[red]error:[/red] {ChainError(str(exc))}")
        raise typer.Exit(2) from None
    print(json.dumps({"rpc_url": rpc_url, "netuid": netuid, "registry": registry, "ledger": ledger}))


@app.command()
def permit(
    uid: int = typer.Argument(..., help="uid to grant (or revoke) a validator permit"),
    rpc_url: str = typer.Option(..., "--rpc-url"),
    registry: str = typer.Option(..., "--registry"),
    ledger: str = typer.Option(..., "--ledger"),
    admin_key: str = typer.Option(..., "--admin-key", envvar="ROLLPROOF_ADMIN_KEY"),
    revoke: bool = typer.Option(False, "--revoke"),
) -> None:
    """Grant a validator permit (the registry's admin only)."""
    from eth_account import Account

    from adapters.chain.evm import EVMChain

    try:
        chain = EVMChain.connect(rpc_url, registry, ledger)
        chain.set_validator_permit(uid, not revoke, admin=Account.from_key(admin_key))
    except (RollproofError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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

    try:
        chain = EVMChain.connect(rpc_url, registry, ledger)
        chain.set_trainer(hotkey, trainer_address, admin=Account.from_key(admin_key))
    except (RollproofError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"trainer: {hotkey} (EVM {trainer_address})")
