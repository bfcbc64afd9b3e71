"""A stand-in for subtensor's reads (block height, metagraph, storage items by the SDK's names), for
tests without a subtensor node; what they check is the adapter's logic and the real EVM contracts."""

from types import SimpleNamespace


class SubtensorReads:
    def __init__(self, block, neurons, storage=None):
        self.block = block
        self.storage = storage or {}
        graph = SimpleNamespace(neurons=[SimpleNamespace(uid=u, hotkey=h, validator_permit=True) for u, h in neurons])
        self.subnets = SimpleNamespace(metagraph=lambda netuid: graph)

    def query(self, item, params=None, block=None):
        return self.storage.get(item.name)
