"""The validator's node defaults (not consensus: another value changes no verdict). Shared by
validator.service and the `rollproof validator run` options, so the command line and the library
agree; this module imports nothing, so the CLI reads it without loading torch."""

# an opening round this long past its emission time that no relay serves is a relay outage (before
# that, a relay may simply not have it yet)
BEACON_GRACE_S = 10
# finished windows whose fetched bundles stay on disk for audit (48 x 20 blocks x 12 s = 3.2 hours);
# only bundles that parsed are kept, each up to its window's bound (verification.bundle_size), so an
# unbounded archive would still fill the disk
DEFAULT_KEEP_BUNDLES = 48
# after an outage, closed windows processed to catch up (older ones are skipped with a warning):
# each costs a full verification, and miners need not keep old bundles online
MAX_CATCH_UP_WINDOWS = 3
# windows whose scores one weight set combines at most (the skipped run before it plus its own):
# 72 x 20 blocks x 12 s = 4.8 hours, four Bittensor tempos of 360 blocks. A chain that refuses
# weights for longer would otherwise make every later set read and sum an ever longer run of reports
# (and keep paying miners for work done hours ago); older skipped windows then count in no set
MAX_COMBINED_WINDOWS = 72
# ---- fetching a window's bundles (issue 24 item 4: stalling locations cannot crowd honest miners out)
# A window's bundles are all fetched up front, FETCH_WORKERS at a time, in an order fixed by the
# window's opening randomness (no miner chooses its place), each within its own deadline and all
# within WINDOW_FETCH_BUDGET_S. Fetches are I/O bound: a worker is a thread waiting on a socket,
# and each holds at most the window's bundle bound (verification.bundle_size), so 64 cost at most
# 64 x 2 MB at the base params. With 256 uids (a subnet's maximum) at most ceil(256 / 64) = 4
# deadlines pass one after another, so stallers cannot fill the window. Lowering FETCH_WORKERS
# lets ~FETCH_WORKERS x budget / deadline stallers push later miners past the budget (at 4 workers,
# 32 stallers filled a 240-s window); raising it costs a thread each.
FETCH_WORKERS = 64
# Per-location deadline = FETCH_CONNECT_S + the window's bundle bound / FETCH_MIN_RATE_BYTES_S
# (capped by the operator's --fetch-timeout, FETCH_TIMEOUT_S by default): 5 s + 2.0 MB / 256 KiB/s
# = 12.6 s at the base params. Storage slower than FETCH_MIN_RATE_BYTES_S for a bound-sized file
# fails fetch_failed; an honest 42 kB bundle needs 0.16 kB/s. Raising the rate cuts a staller's hold
# on a slot; lowering it helps slow stores.
FETCH_CONNECT_S = 5.0
FETCH_MIN_RATE_BYTES_S = 256 * 1024
# Total seconds a window's fetching may take (of a 240-s window, which also needs verification): a
# location not fetched by then fails fetch_failed. Above ceil(256 / FETCH_WORKERS) x 12.6 s = 50 s,
# so no set of stallers exhausts it at the base params.
WINDOW_FETCH_BUDGET_S = 90.0


def fetch_deadline_s(bound_bytes: int) -> float:
    """Seconds one location may take to deliver a bundle of at most bound_bytes."""
    return FETCH_CONNECT_S + bound_bytes / FETCH_MIN_RATE_BYTES_S
# miners verified together: one Verifier.verify_many over their bundles, so their checked rollouts
# fill recompute forwards across groups and miners (verification.model.default_batch_rows per
# forward, within RECOMPUTE_BATCH_BYTES) instead of one forward per checked group. A block's bundles
# are held in memory together (at most VERIFY_MINERS x MAX_BUNDLE_BYTES) and its outcomes are
# journaled when it finishes (a crash re-verifies at most one block).
VERIFY_MINERS = 16
