"""A node's start: open the chain, run the role's startup check (a miner's or validator's preflight,
the trainer's key), read the chain's identity, all before the model loads.

The rule, per command (README "Operating a node"):
  - `miner run`, `validator run`, `trainer run` (long-running): an unreachable chain at start is an
    outage like any later one. The node waits with the outage backoff (adapters/outage.py), one log
    line when the chain is found down and one when it answers, for at most --chain-wait seconds
    (default: as long as it takes; 0: fail at the first unreachable attempt).
  - one-shot commands (`miner register`, `chain ...`) fail at once with one line
    (cli_common.probe_rpc); `verify` and `localnet` read no outside chain.
Whatever waiting cannot fix ends the start at once with one line and exit code 2: a permanent
refusal (ChainRefusedError: unregistered, no permit, an EVM key that does not own the uid), an
endpoint that answers but not as JSON-RPC, contracts missing at an endpoint that answers
(EVM: the endpoint's eth_chainId is read again after any chain error; if it answers, the error is
not an outage)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.chain.base import Chain
from adapters.connect import ChainOptions, WalletOptions, open_chain
from adapters.outage import Backoff, Dependency
from rollproof.cli_common import EndpointUnreachable, evm_endpoints, read_chain_id
from verification.errors import ChainError, ChainRefusedError, ConfigError, RollproofError

log = logging.getLogger("rollproof.startup")


@dataclass
class StartedChain:
    chain: Chain
    checked: Any  # what the role's check returned (the uid, for miners and validators)
    identity: str  # chain.identity(): the journal directory's name


def probe_endpoints(opts: ChainOptions) -> None:
    """eth_chainId at every EVM endpoint of `opts`: EndpointUnreachable or ConfigError."""
    for flag, url in evm_endpoints(opts):
        read_chain_id(url, flag)


def is_outage(opts: ChainOptions, exc: ChainError) -> bool:
    """Whether a ChainError at start may pass by waiting. EVM endpoints are asked again: one that
    answers now is not down, so the error is about what it serves (wrong addresses, window length)."""
    if isinstance(exc, ChainRefusedError):
        return False
    if isinstance(exc, EndpointUnreachable):
        return True
    if opts.rpc_url is not None:
        try:
            probe_endpoints(opts)
        except EndpointUnreachable:
            return True
        except ConfigError:  # answering, but not as JSON-RPC
            return False
        return False
    return True  # Bittensor: the SDK's connection errors (its permanent refusals are ChainRefusedError)


def start_chain(opts: ChainOptions, keypair, wallet: WalletOptions, check: Callable[[Chain], Any], *,
                wait_s: float | None, stop: threading.Event, backoff: Backoff | None = None,
                logger: logging.Logger = log, clock: Callable[[], float] = time.monotonic) -> StartedChain | None:
    """Open the chain, run `check(chain)`, read its identity; through outages, retry with backoff
    for at most `wait_s` seconds (None: no limit). None when `stop` is set while waiting. Raises
    ChainRefusedError, ConfigError and any non-outage error at once, and the last outage error
    (ChainError, its text saying how long it waited) once `wait_s` is spent."""
    down = Dependency("chain", logger, backoff, clock=clock)
    began = clock()
    while True:
        chain = None
        try:
            probe_endpoints(opts)
            chain = open_chain(opts, keypair, wallet)
            checked = check(chain)
            identity = chain.identity()
        except ChainError as exc:
            _close(chain)
            if not is_outage(opts, exc):
                down.ok()  # it answered (refusing is answering): the outage, if any, is over
                raise
            waited = clock() - began
            if wait_s is not None and waited >= wait_s:
                if down.failures == 0:
                    raise  # --chain-wait 0: the first attempt's error, as it was
                raise ChainError(f"{exc} (still unreachable after waiting {waited:.0f} s, --chain-wait "
                                 f"{wait_s:g})") from exc
            delay = down.failed(exc)
            if wait_s is not None:
                delay = min(delay, max(0.0, wait_s - waited))
            if stop.wait(delay):
                return None
            continue
        except RollproofError:  # ConfigError and the like: an answer waiting does not change
            _close(chain)
            down.ok()
            raise
        except BaseException:
            _close(chain)
            raise
        down.ok()
        return StartedChain(chain, checked, identity)


def _close(chain: Chain | None) -> None:
    if chain is not None:
        try:
            chain.close()
        except Exception:  # noqa: BLE001 - closing a chain that failed to start must not mask why
            pass
