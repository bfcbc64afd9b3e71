"""A small network on the embedded chain for miner and validator tests: registered keys, a local
drand, a file store, and helpers to build miners and validators and move the chain's clock."""

from __future__ import annotations

from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import EVMChain
from adapters.fetch import Fetcher
from adapters.storage import FileStore
from miner.service import Miner
from validator.service import Validator
from verification.challenge import window_of_block, window_start_block


class Net:
    def __init__(self, tmp_path, lm, local_drand, keys):
        self.chain = EVMChain.embedded_chain(3)
        self.beacons = LocalBeaconSource(local_drand, clock=self.chain.now)
        self.store = FileStore(tmp_path / "store")
        self.lm = lm
        self.tmp = tmp_path
        for k in keys:
            self.chain.register(k)

    def uid(self, key) -> int:
        return self.chain.uid_of(key.ss58_address)

    def miner(self, key, cls=Miner, name="m", **kw):
        return cls(self.chain, key, self.lm, self.store, self.beacons, self.tmp / name, **kw)

    def validator(self, key, name="v", **kw) -> Validator:
        """A validator process on the journal at tmp/<name> (a new object each call: a restart)."""
        self.chain.set_validator_permit(self.uid(key))
        return Validator(self.chain, key, self.lm, self.beacons, Fetcher(file_roots=[self.store.root]),
                         self.tmp / name, **kw)

    def next_window(self) -> int:
        w = window_of_block(self.chain.current_block()) + 1
        self.chain.mine(window_start_block(w) - self.chain.current_block())
        return w

    def open(self, validator, window):
        while not validator.ready(window):
            self.chain.mine(1)
