"""rollproof miner: generation engine, proof builder, journaled window loop."""
