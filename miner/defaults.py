"""The miner's node defaults (not consensus). Shared by miner.service and the `rollproof miner run`
options; this module imports nothing, so the CLI reads it without loading torch."""

# rollouts decoded at once (memory, not results: the sampling rule is per row)
DEFAULT_BATCH_SIZE = 16
# windows whose bundle bytes stay in the journal (a restart needs only the current one)
DEFAULT_KEEP_BUNDLES = 3
