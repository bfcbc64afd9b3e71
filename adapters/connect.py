"""Turning command-line options into the objects a role needs: hotkey, chain, beacon source."""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from pathlib import Path

from adapters.beacons import DEFAULT_RELAYS, BeaconSource, HttpRelaySource, LocalBeaconSource
from adapters.chain.base import Chain
from verification.errors import ConfigError

EMBEDDED = "embedded"
BITTENSOR_NETWORKS = ("finney", "test", "local", "archive")


@dataclass
class ChainOptions:
    network: str = EMBEDDED  # "embedded", a bittensor network name or ws(s):// endpoint
    netuid: int = 1
    rpc_url: str | None = None  # an EVM JSON-RPC endpoint running the rollproof contracts
    registry: str | None = None
    ledger: str | None = None
    evm_key: str | None = None  # hex private key of a funded EVM account (RPC chains)
    ledger_rpc_url: str | None = None  # with a Bittensor network: the EVM holding registry + ledger
    # with a Bittensor network and no ledger: the hotkey (ss58) or uid whose commitment announces
    # checkpoints; None: the subnet owner's hotkey
    announcer: str | None = None
    drand: str | None = None  # "local" | "quicknet"; default: local on embedded, quicknet elsewhere
    drand_relays: tuple[str, ...] = DEFAULT_RELAYS
    local_drand_seed: str | None = None

    @property
    def is_embedded(self) -> bool:
        return self.rpc_url is None and self.network == EMBEDDED

    @property
    def is_bittensor(self) -> bool:
        return self.rpc_url is None and self.network != EMBEDDED


@dataclass
class WalletOptions:
    name: str = "default"
    hotkey: str = "default"
    path: str = "~/.bittensor/wallets"


def load_wallet(opts: WalletOptions):
    import bittensor as bt

    return bt.Wallet(name=opts.name, hotkey=opts.hotkey, path=str(Path(opts.path).expanduser()))


def load_hotkey(opts: WalletOptions, *, allow_dev: bool):
    """The wallet's hotkey keypair. With allow_dev (embedded chain only), a missing wallet falls back
    to the development key //rollproof/<name>/<hotkey>, and says so."""
    from bittensor.sp_core import Keypair

    try:
        return load_wallet(opts).hotkey, False
    except Exception as exc:  # noqa: BLE001 - the SDK's key-file errors have no common base
        if allow_dev:
            return Keypair.create_from_uri(f"//rollproof/{opts.name}/{opts.hotkey}"), True
        raise ConfigError(f"cannot load hotkey {opts.name}/{opts.hotkey} from {opts.path}: {exc}") from exc


def open_chain(opts: ChainOptions, keypair=None, wallet_opts: WalletOptions | None = None,
               *, auto_mine: bool = True) -> Chain:
    if opts.ledger_rpc_url and not opts.is_bittensor:
        raise ConfigError("--ledger-rpc-url goes with a Bittensor --network; on an EVM chain the ledger is already there")
    if opts.announcer is not None and (not opts.is_bittensor or opts.ledger_rpc_url):
        raise ConfigError("--announcer goes with a Bittensor --network without --ledger-rpc-url (an EVM registry "
                          "names its trainer itself)")
    if opts.rpc_url:
        from adapters.chain.evm import EVMChain

        if not (opts.registry and opts.ledger):
            raise ConfigError("--rpc-url needs --registry and --ledger (see `rollproof chain deploy`)")
        keys = {keypair.ss58_address: opts.evm_key} if (keypair is not None and opts.evm_key) else None
        chain = EVMChain.connect(opts.rpc_url, opts.registry, opts.ledger, evm_keys=keys)
        if chain.netuid != opts.netuid:  # a registry holds one subnet: never act on another than asked
            raise ConfigError(f"--netuid {opts.netuid}: the registry at {opts.registry} holds netuid {chain.netuid} "
                              f"(pass --netuid {chain.netuid}, or the registry `rollproof chain deploy --netuid "
                              f"{opts.netuid}` printed)")
        return chain
    if opts.network == EMBEDDED:
        from adapters.chain.evm import EVMChain

        return EVMChain.embedded_chain(opts.netuid, auto_mine=auto_mine)
    from adapters.chain.bittensor_chain import BittensorChain

    wallet = load_wallet(wallet_opts) if wallet_opts is not None else None
    ledger = None
    if opts.ledger_rpc_url:
        from adapters.chain.evm import EVMChain

        if not (opts.registry and opts.ledger and opts.evm_key and keypair is not None):
            raise ConfigError("--ledger-rpc-url needs --registry, --ledger and --evm-key (see `rollproof chain deploy`)")
        ledger = EVMChain.connect(opts.ledger_rpc_url, opts.registry, opts.ledger,
                                  evm_keys={keypair.ss58_address: opts.evm_key})
        if ledger.netuid != opts.netuid:
            raise ConfigError(f"the registry at {opts.registry} is for netuid {ledger.netuid}, not {opts.netuid}")
    chain = BittensorChain(opts.network, opts.netuid, wallet=wallet, ledger=ledger,
                           announcer=parse_announcer(opts.announcer))
    # the SDK's client runs an event loop thread: close it before the interpreter tears threads
    # down, or its pending tasks are reported destroyed at every exit
    atexit.register(chain.close)
    return chain


def parse_announcer(spec: str | None) -> str | int | None:
    """--announcer: a uid (digits) or an ss58 hotkey; ConfigError for anything else."""
    if spec is None:
        return None
    if spec.isdigit():
        return int(spec)
    from bittensor.sp_core import Keypair

    try:
        Keypair(ss58_address=spec)
    except Exception as exc:  # noqa: BLE001 - the SDK's ss58 errors have no common base
        raise ConfigError(f"--announcer {spec!r}: neither a uid nor an ss58 hotkey ({exc})") from None
    return spec


def beacon_source(opts: ChainOptions, chain: Chain) -> BeaconSource:
    kind = opts.drand or ("local" if not opts.is_bittensor else "quicknet")
    if kind == "local":
        from verification.drand_local import DEFAULT_LOCAL_SEED, LocalDrand

        return LocalBeaconSource(LocalDrand(opts.local_drand_seed or DEFAULT_LOCAL_SEED), clock=chain.now)
    from verification.drand import PUBLIC_NETWORKS

    if kind not in PUBLIC_NETWORKS:
        raise ConfigError(f"unknown drand network {kind!r}; use local or one of {sorted(PUBLIC_NETWORKS)}")
    return HttpRelaySource(PUBLIC_NETWORKS[kind], opts.drand_relays)


def default_state_dir(role: str, wallet: WalletOptions, netuid: int) -> Path:
    return Path("~/.rollproof").expanduser() / role / f"{wallet.name}-{wallet.hotkey}-{netuid}"
