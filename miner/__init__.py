"""rollproof miner: generation engine, proof builder, bundle publication, CLI."""
