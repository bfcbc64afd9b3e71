"""A stand-in for subtensor's reads (block height, metagraph, storage items by the SDK's names), for
tests without a subtensor node; what they check is the adapter's logic and the real EVM contracts.
It records how the adapter called it (metagraph arguments, executed intents)."""

from types import SimpleNamespace


class SubtensorReads:
    def __init__(self, block, neurons, storage=None, *, finalized=None, burn_rao=0, result=None, permits=None,
                 metadata=None):
        """neurons=None: the netuid names no subnet (the SDK's metagraph answers None). permits: the
        uids holding a validator permit (default: every uid). metadata: the runtime's metadata IR
        (spec_version, pallets), served by metadata_ir() and counted in metadata_reads."""
        self.block = block
        self.finalized_block = block if finalized is None else finalized
        self.storage = storage or {}
        self.metagraph_calls: list[dict] = []
        self.executed: list = []
        self.metadata_reads = 0
        if metadata is not None:
            def metadata_ir():
                self.metadata_reads += 1
                return metadata

            self.metadata_ir = metadata_ir
        self.result = result or SimpleNamespace(success=True, message="Success", error=None)
        graph = None if neurons is None else SimpleNamespace(
            neurons=[SimpleNamespace(uid=u, hotkey=h, validator_permit=permits is None or u in permits)
                     for u, h in neurons])

        def metagraph(netuid, block=None, *, commitments=True):
            self.metagraph_calls.append({"netuid": netuid, "commitments": commitments})
            return graph

        self.subnets = SimpleNamespace(metagraph=metagraph, burn=lambda netuid: SimpleNamespace(rao=burn_rao))

    def query(self, item, params=None, block=None):
        return self.storage.get(item.name)

    def execute(self, intent, wallet, **kwargs):
        self.executed.append(intent)
        return self.result

    def submit_call(self, call, wallet, **kwargs):
        self.executed.append(call)
        return self.result
