"""The validator's node defaults (not consensus: another value changes no verdict). Shared by
validator.service and the `rollproof validator run` options, so the command line and the library
agree; this module imports nothing, so the CLI reads it without loading torch."""

# an opening round this long past its emission time that no relay serves is a relay outage (before
# that, a relay may simply not have it yet)
BEACON_GRACE_S = 10
# finished windows whose fetched bundles stay on disk for audit (48 x 20 blocks x 12 s = 3.2 hours);
# every bundle is up to MAX_BUNDLE_BYTES, so an unbounded archive would fill the disk
DEFAULT_KEEP_BUNDLES = 48
# after an outage, closed windows processed to catch up (older ones are skipped with a warning):
# each costs a full verification, and miners need not keep old bundles online
MAX_CATCH_UP_WINDOWS = 3
# windows whose scores one weight set combines at most (the skipped run before it plus its own):
# 72 x 20 blocks x 12 s = 4.8 hours, four Bittensor tempos of 360 blocks. A chain that refuses
# weights for longer would otherwise make every later set read and sum an ever longer run of reports
# (and keep paying miners for work done hours ago); older skipped windows then count in no set
MAX_COMBINED_WINDOWS = 72
# miners' bundles fetched at once: each fetch is bounded by FETCH_TIMEOUT_S and MAX_BUNDLE_BYTES, so
# a window's fetching waits at most ceil(miners / FETCH_WORKERS) deadlines
FETCH_WORKERS = 4
# miners verified together: one Verifier.verify_many over their bundles, so their checked rollouts
# fill recompute forwards across groups and miners (verification.model.default_batch_rows per
# forward, within RECOMPUTE_BATCH_BYTES) instead of one forward per checked group. A block's bundles
# are held in memory together (at most VERIFY_MINERS x MAX_BUNDLE_BYTES) and its outcomes are
# journaled when it finishes (a crash re-verifies at most one block).
VERIFY_MINERS = 16
