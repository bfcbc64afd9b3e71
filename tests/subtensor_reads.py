"""A stand-in for the two subtensor reads the score-ledger path makes (block height and the
metagraph), for tests without a subtensor node; everything they check goes through real EVM contracts."""

from types import SimpleNamespace


class SubtensorReads:
    def __init__(self, block, neurons):
        self.block = block
        graph = SimpleNamespace(neurons=[SimpleNamespace(uid=u, hotkey=h, validator_permit=True) for u, h in neurons])
        self.subnets = SimpleNamespace(metagraph=lambda netuid: graph)
