"""Chain adapters shared by miner and validator: the embedded/any-RPC EVM running the project's
contracts, and the Bittensor subtensor through the bittensor SDK."""

from adapters.chain.base import BlockInfo, Chain, CommitmentRecord, LedgerEntry, Neuron

__all__ = ["BlockInfo", "Chain", "CommitmentRecord", "LedgerEntry", "Neuron"]
