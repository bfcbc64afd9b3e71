"""Adapters shared by every role: chains (embedded/RPC EVM running the project's contracts, Bittensor),
bundle storage and fetching, drand beacon sources, crash-safe files. They import only `verification`."""
