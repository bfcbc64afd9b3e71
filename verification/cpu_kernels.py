"""The candidate filter's two passes over every vocabulary entry (verification/tensor_ops.py), as
compiled CPU loops (numba). Each pass is one loop over the row instead of eight numpy ufunc passes
over memory, and its inner loop has a fixed length so that it compiles to vector instructions: measured
at V = 151,936, 16 rows, one thread, the top-bucket pass takes 0.8 ms where numpy's uint64 ufuncs take
7.5 ms, and the within-reach pass 0.4 ms where numpy's compare and nonzero scan take 1.1 ms (an inner
loop bounded by min(V, block end) did not vectorize: 2.4 ms each; scripts/proof_cost.py gives the
end-to-end figures).

Both passes only select entries: what they select is what the numpy passes select, entry for entry
(tests/test_grpo_sampling_sketch.py), and the exact scores of the selected entries stay with
tensor_ops, so the protocol's bits never depend on this module. Where numba cannot be imported
(a Python release it does not support yet), `available()` is False and tensor_ops runs its numpy
passes, which give the same entries more slowly.

Each pass writes (row, column) pairs in row-major order into caller-given arrays and returns how many
there are; when that exceeds the arrays' length it writes only what fits and the caller calls again
with arrays of the returned length. The loops release the GIL: with `threads` > 1 a batch's rows are
split into that many contiguous slices run at once (the decode step's own threads are idle then), and
the slices' pairs are joined in row order, so the result does not depend on the thread count."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from verification.sampling import MIX1, MIX2

# entries of one block: a whole block is one vector loop that sets the block's flag, and the block is
# scanned entry by entry only when its flag is set (measured at 32-512: 32-64 fastest for the hash,
# 64-256 for the compare; the top bucket holds one entry in 1,024, so 6% of hash blocks are rescanned)
HASH_BLOCK = 64
COMPARE_BLOCK = 128
# a batch is split across threads only from this many entries (rows x V, about 0.3 ms of work): below
# it the hand-off to the pool (tens of microseconds) costs more than a slice saves
PARALLEL_FROM_ENTRIES = 1 << 20


_MIX1, _MIX2 = np.uint64(MIX1), np.uint64(MIX2)
_S30, _S27 = np.uint64(30), np.uint64(27)


def _top_bucket(keys, counters, vocab_size, top_pattern, rows, cols):
    # per row: one pass of whole blocks, each a fixed-length loop the compiler vectorizes (its only
    # output a flag per block), then the flagged blocks and the partial last one again, entry by entry
    blocks = vocab_size // HASH_BLOCK
    hit = np.empty(blocks + 1, np.uint8)
    hit[blocks] = 1
    count = 0
    for r in range(keys.shape[0]):
        key = keys[r]
        for b in range(blocks):
            h = np.uint8(0)
            for j in range(b * HASH_BLOCK, b * HASH_BLOCK + HASH_BLOCK):
                z = key + counters[j]
                z ^= z >> _S30
                z *= _MIX1
                z ^= z >> _S27
                z *= _MIX2
                h |= np.uint8(z >= top_pattern)
            hit[b] = h
        for b in range(blocks + 1):
            if hit[b]:
                for j in range(b * HASH_BLOCK, min(vocab_size, b * HASH_BLOCK + HASH_BLOCK)):
                    z = key + counters[j]
                    z ^= z >> _S30
                    z *= _MIX1
                    z ^= z >> _S27
                    z *= _MIX2
                    if z >= top_pattern:
                        if count < rows.shape[0]:
                            rows[count] = r
                            cols[count] = j
                        count += 1
    return count


def _at_least(lp, thresholds, row_max, rows, cols):
    # the same two steps as _top_bucket: a flag per whole block, then the flagged blocks entry by entry
    n, v = lp.shape
    blocks = v // COMPARE_BLOCK
    hit = np.empty(blocks + 1, np.uint8)
    hit[blocks] = 1
    count = 0
    for r in range(n):
        t = thresholds[r]
        if t > row_max[r]:
            continue
        row = lp[r]
        for b in range(blocks):
            h = np.uint8(0)
            for j in range(b * COMPARE_BLOCK, b * COMPARE_BLOCK + COMPARE_BLOCK):
                h |= np.uint8(row[j] >= t)
            hit[b] = h
        for b in range(blocks + 1):
            if hit[b]:
                for j in range(b * COMPARE_BLOCK, min(v, b * COMPARE_BLOCK + COMPARE_BLOCK)):
                    if row[j] >= t:
                        if count < rows.shape[0]:
                            rows[count] = r
                            cols[count] = j
                        count += 1
    return count


@functools.cache
def _kernels():
    """The two loops compiled by numba (imported here, at first use: it adds half a second to an
    import), or None without numba. numba's on-disk cache keeps the machine code between processes."""
    try:
        import numba
    except ImportError:  # pragma: no cover - where numba has no wheel for this Python
        return None
    jit = numba.njit(nogil=True, boundscheck=False, cache=True)
    return jit(_top_bucket), jit(_at_least)


def available() -> bool:
    return _kernels() is not None


def _collect(run, expected: int) -> tuple[np.ndarray, np.ndarray]:
    size = max(expected, 64)
    while True:
        rows, cols = np.empty(size, np.int64), np.empty(size, np.int64)
        count = run(rows, cols)
        if count <= size:
            return rows[:count], cols[:count]
        size = count


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    # one pool per process: a forked child inherits the parent's pool object without its threads
    return ThreadPoolExecutor(threads, thread_name_prefix="rollproof-filter")


def _by_row_slices(pass_on_rows, n: int, vocab_size: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """pass_on_rows(lo, hi) -> (rows relative to lo, cols) over rows [lo, hi), run on `threads`
    contiguous slices at once where the batch is large enough, joined in row order."""
    parts = min(max(1, threads), n) if n * vocab_size >= PARALLEL_FROM_ENTRIES else 1
    if parts <= 1:
        return pass_on_rows(0, n)
    bounds = [n * i // parts for i in range(parts + 1)]
    results = list(_pool(parts, os.getpid()).map(lambda i: pass_on_rows(bounds[i], bounds[i + 1]), range(parts)))
    rows = np.concatenate([r + bounds[i] for i, (r, _) in enumerate(results)])
    return rows, np.concatenate([c for _, c in results])


def top_bucket_entries(keys: np.ndarray, counters: np.ndarray, vocab_size: int,
                       top_pattern: np.uint64, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the entries whose mixed counter (splitmix64's first four steps of
    key + counters[col]) is >= top_pattern, row-major; keys [N] and counters [V] uint64."""
    kernel = _kernels()[0]
    # a uniform is in the top bucket with probability 2^-TOP_BITS: twice that leaves room
    share = 1.0 - float(top_pattern) / 2.0 ** 64

    def on_rows(lo, hi):
        part = keys[lo:hi]
        return _collect(lambda rows, cols: kernel(part, counters, vocab_size, top_pattern, rows, cols),
                        2 * int((hi - lo) * vocab_size * share) + 64)
    return _by_row_slices(on_rows, keys.shape[0], vocab_size, threads)


def entries_at_least(lp: np.ndarray, thresholds: np.ndarray, row_max: np.ndarray,
                     threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the entries with lp[row, col] >= thresholds[row], row-major; lp [N, V] and
    thresholds [N] float32, row_max [N] lp's row maxima (a row whose threshold is above it is skipped)."""
    kernel = _kernels()[1]

    def on_rows(lo, hi):
        part, t, m = lp[lo:hi], thresholds[lo:hi], row_max[lo:hi]
        return _collect(lambda rows, cols: kernel(part, t, m, rows, cols), 64 * (hi - lo))
    return _by_row_slices(on_rows, lp.shape[0], lp.shape[1], threads)
