"""Run by tests/test_weights_journal.py: a validator process that does the chain writes of the
windows already scored in its journal (one pass of Validator.run's write step) against a served
chain, and SIGKILLs itself right after the weights transaction landed, before anything more is
journaled: a real kill, no cleanup, no exception handler, exactly at that boundary."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(rpc_url: str, registry: str, ledger: str, evm_key: str, state_dir: str) -> None:
    from bittensor.sp_core import Keypair

    from adapters.beacons import LocalBeaconSource
    from adapters.chain.evm import EVMChain
    from validator.service import Validator
    from verification.drand_local import LocalDrand

    key = Keypair.create_from_uri("//weights-journal/validator")
    chain = EVMChain.connect(rpc_url, registry, ledger, evm_keys={key.ss58_address: evm_key})
    # the write step reads only the journal and the chain: no model, no fetcher
    validator = Validator(chain, key, None, LocalBeaconSource(LocalDrand()), None, state_dir)
    real = chain.set_weights

    def land_then_die(*a, **kw):
        real(*a, **kw)
        print("weights sent", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    chain.set_weights = land_then_die
    validator._write_pending([])
    print("no weights sent", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
