"""rollproof: the CLI and the adapters (beacon sources, storage, chain) shared by miner and validator."""
