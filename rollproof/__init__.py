"""rollproof: the application layer. The `rollproof` CLI (miner, validator, trainer, verify, chain,
localnet) and the local network. It sits on top of every other package and nothing imports it.

Layers, each importing only the ones below it:
  verification/   pure protocol (no network, no chain, no torch in its pure modules)
  adapters/       chain (EVM, Bittensor), bundle storage, drand beacon sources, files
  miner/ validator/ trainer/ adversary/   the roles (adversary: cheating miners for the attack suite)
  rollproof/      CLI and local network
"""
