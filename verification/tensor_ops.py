"""The protocol's per-token arithmetic in torch, on whatever device holds the model: the Gumbel
noise, the sampling rule and its check (verification/sampling.py is the numpy reference; the noise
bits are identical) and the hidden-state sketch (verification/sketch.py). Batched over rows and
positions: nothing here loops in Python over rows, and only the chosen tokens, their logprobs and
sketches (or the per-position check statistics) need leave the device.

torch has no uint64, so the 64-bit arithmetic runs in int64: addition and multiplication wrap
modulo 2^64 in two's complement on every backend, which gives the unsigned result's bits, and a
logical right shift is an arithmetic shift with the sign-extended bits masked off.

The argmax of float64(lp) + G over V entries needs the exact score of only a few of them, and the
result is the one the full computation (sample_tokens_full, sampling_gap_full) gives, bit for bit:
the same entries go through the same float64 operations. The splitmix64 finalizer's last step,
z ^= z >>> 31, leaves the top 33 bits of z as they are, so its first two steps tell which entries
have a uniform in the top bucket u >= 1 - 2^-TOP_BITS (V / 2^TOP_BITS per row on average). Every
other entry has G < G_CAP = -ln(-ln(1 - 2^-TOP_BITS + 2^-53)), so it can reach its row's best score
only where lp >= L - G_CAP, for any lower bound L of that best: the best exact score of the row's
top-bucket entries, or its largest logprob plus the least noise there is (-3.62). The exact scores
(the whole counter hash, two float64 logarithms) of the top-bucket entries and of those within
reach then decide the token and the gap. What runs over all V entries is eight integer operations
and a float32 compare, without a logarithm: on a CPU two compiled loops over the row
(verification/cpu_kernels.py; 3-9x faster than numpy's uint64 ufuncs, which run where numba is missing), on an
accelerator eleven torch int64 ops and four float32/bool passes. A row whose threshold is above its
largest logprob (a flat row) skips the compare. The candidates are 0.06-0.3% of the row (measured:
139 of 49,152 per position on SmolLM2, 48 on a random-init head). Below FILTER_FROM_ENTRIES entries
the definition itself is cheaper and runs."""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from verification import cpu_kernels
from verification.sampling import GAMMA, MIX1, MIX2
from verification.constants import UNIFORM_BITS

SKETCH_CLAMP = 32767


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GAMMA, _MIX1, _MIX2 = _signed(GAMMA), _signed(MIX1), _signed(MIX2)

# Top-bucket width of the candidate filter (an implementation choice: the result does not depend on
# it). 2^-10: 48 entries per row at V = 49,152 and 148 at 151,936 always get an exact score.
TOP_BITS = 10
# G of the largest uniform below the top bucket, plus a slack far above the logarithms' ulp errors
# and float32 rounding of the threshold (a larger slack only adds candidates)
_G_CAP = -math.log(-math.log(1.0 - 2.0 ** -TOP_BITS + 2.0 ** -UNIFORM_BITS))
_SLACK = 1e-3
# -G of the least uniform (2^-54): no entry's noise is below -_G_MIN_ABS
_G_MIN_ABS = math.log(-math.log(2.0 ** -(UNIFORM_BITS + 1)))
# entries whose hash is computed at once: on a CPU two reused work buffers of this many entries
# stay in cache (measured: 2^16 20% faster than 2^17, and fresh whole-batch temporaries ran 10x
# slower per row at 64 x 151,936); an accelerator takes whole batches up to the larger bound
# (fewer kernel launches)
HASH_CHUNK_ENTRIES = 1 << 16
HASH_CHUNK_ENTRIES_ACCELERATOR = 1 << 26
# below this many entries (rows x V) the full definition is cheaper than the filter's fixed cost of
# about a hundred small tensor ops (measured on a CPU: 0.05 vs 0.24 ms at 259 entries, even at 32,768)
FILTER_FROM_ENTRIES = 1 << 15
# largest work buffer (bytes) the filter keeps between calls, per thread, on a CPU
WORKSPACE_KEEP_BYTES = 64 << 20
_WORKSPACE = threading.local()
# rows of the full definition (`scores`) computed at once: at least FULL_CHUNK_ROWS, more while
# they hold at most FULL_CHUNK_ENTRIES entries (float64 temporaries in cache on a CPU, and few ops
# for a small vocabulary)
FULL_CHUNK_ROWS = 4
FULL_CHUNK_ENTRIES = 1 << 16


def _lsr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)


def keys_tensor(keys, device) -> torch.Tensor:
    """uint64 keys (numpy) as int64 bit patterns on device."""
    return torch.from_numpy(np.asarray(keys, dtype=np.uint64).view(np.int64)).to(device)


_COUNTERS: dict[tuple[int, str], torch.Tensor] = {}


def _counters(vocab_size: int, device) -> torch.Tensor:
    """(j + 1) * GAMMA mod 2^64 for j < V, cached per device."""
    key = (vocab_size, str(device))
    c = _COUNTERS.get(key)
    if c is None:
        if len(_COUNTERS) > 8:
            _COUNTERS.clear()
        c = _COUNTERS[key] = torch.arange(1, vocab_size + 1, dtype=torch.int64, device=device) * _GAMMA
    return c


def _xorshift_(z: torch.Tensor, k: int, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """z ^= z >>> k, in place (logical shift: the sign-extended bits are masked off); `tmp` is a
    work buffer of z's shape."""
    t = torch.bitwise_right_shift(z, k, out=tmp) if tmp is not None else z >> k
    t &= (1 << (64 - k)) - 1
    return z.bitwise_xor_(t)


def _mix_(z: torch.Tensor, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """splitmix64's finalizer, in place."""
    _xorshift_(z, 30, tmp).mul_(_MIX1)
    _xorshift_(z, 27, tmp).mul_(_MIX2)
    return _xorshift_(z, 31, tmp)


def _to_uniforms(z: torch.Tensor) -> torch.Tensor:
    u = _lsr(z, 64 - UNIFORM_BITS).double()
    return u.add_(0.5).mul_(2.0 ** -UNIFORM_BITS)


def noise_uniforms(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> uniforms float64 [..., V], bit-identical to the reference."""
    return _to_uniforms(_mix_(_counters(vocab_size, keys.device) + keys.unsqueeze(-1)))


def _gumbel_(u: torch.Tensor) -> torch.Tensor:
    return u.log_().neg_().log_().neg_()


def gumbel_noise(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> noise float64 [..., V] (within an ulp of the reference's logarithms)."""
    return _gumbel_(noise_uniforms(keys, vocab_size))


def scores(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """float64(lp) + G, [..., V], every entry (the definition; sample_tokens and sampling_gap give
    what its argmax and max give without computing all of it)."""
    return gumbel_noise(keys, logprobs.shape[-1]).add_(logprobs.float().double())


# ---- the candidate filter (module docstring) -------------------------------------------------
def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised work tensor. On a CPU one buffer per name, dtype and thread is kept and
    reused up to WORKSPACE_KEEP_BYTES (fresh large allocations page-fault on every call: measured,
    zero-filling a fresh 0.8 MB mask cost more than the whole hash of its entries); an accelerator's
    caching allocator does this itself. Valid until the next call for that name in this thread."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel * torch.empty((), dtype=dtype).element_size() > WORKSPACE_KEEP_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    kept = _WORKSPACE.__dict__.setdefault("buffers", {})
    buf = kept.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = kept[(name, dtype)] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def _mask_and_chunk(n: int, vocab_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The [N, V rounded up to a multiple of 8] bool work mask (padding False) and the hash's row chunk."""
    top = _buffer("mask", (n, -(-vocab_size // 8) * 8), torch.bool, device)
    top[:, vocab_size:] = False
    bound = HASH_CHUNK_ENTRIES if device.type == "cpu" else HASH_CHUNK_ENTRIES_ACCELERATOR
    return top, max(1, min(n, bound // max(vocab_size, 1)))


# torch backend (an accelerator; on a CPU only in tests) ------------------------------------------
def _top_bucket_torch(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """bool mask: the entry's uniform is in the top bucket (the top TOP_BITS bits of its mixed
    counter are all ones; the finalizer's last step does not change them, so it is skipped)."""
    n = keys.shape[0]
    top, chunk = _mask_and_chunk(n, vocab_size, keys.device)
    z = _buffer("hash", (chunk, vocab_size), torch.int64, keys.device)
    tmp = _buffer("hash_tmp", (chunk, vocab_size), torch.int64, keys.device)
    c = _counters(vocab_size, keys.device)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        zz, tt = z[:m], tmp[:m]
        torch.add(c, keys[i:i + m].unsqueeze(-1), out=zz)
        _xorshift_(zz, 30, tt).mul_(_MIX1)
        _xorshift_(zz, 27, tt).mul_(_MIX2)
        torch.bitwise_right_shift(zz, 64 - TOP_BITS, out=tt)
        torch.eq(tt, -1, out=top[i:i + m, :vocab_size])
    return top


def _entries_torch(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the True entries of a sparse bool [N, 8k] mask, in row-major order: the
    zero test runs over 8-entry words, then over the few nonzero words' entries."""
    rows, words = mask.view(torch.int64).nonzero(as_tuple=True)
    cols = (words.unsqueeze(-1) * 8 + torch.arange(8, device=mask.device)).reshape(-1)
    rows = rows.repeat_interleave(8)
    keep = mask[rows, cols]
    return rows[keep], cols[keep]


def _exact_scores(lp: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float64(lp[r, c]) + G[r, c] at the given entries, by the operations `scores` applies to all."""
    z = _counters(lp.shape[-1], lp.device)[cols] + keys[rows]
    return _gumbel_(_to_uniforms(_mix_(z))).add_(lp[rows, cols].double())


def _row_max(n: int, rows: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), -math.inf, dtype=s.dtype, device=s.device).scatter_reduce_(0, rows, s, "amax")


def _candidates_torch(lp: torch.Tensor, keys: torch.Tensor, must: torch.Tensor | None):
    n, v = lp.shape
    top = _top_bucket_torch(keys, v)
    rows1, cols1 = _entries_torch(top)
    s1 = _exact_scores(lp, keys, rows1, cols1)
    floor = torch.maximum(_row_max(n, rows1, s1), lp.amax(-1).double() - (_G_MIN_ABS + _SLACK))
    if bool(floor.isnan().any()):
        return None
    torch.ge(lp, (floor - (_G_CAP + _SLACK)).float().unsqueeze(-1), out=top[:, :v])
    rows2, cols2 = _entries_torch(top)
    if must is not None:
        rows2, cols2 = torch.cat([rows2, torch.arange(n, device=lp.device)]), torch.cat([cols2, must])
    return torch.cat([rows1, rows2]), torch.cat([cols1, cols2]), torch.cat([s1, _exact_scores(lp, keys, rows2, cols2)])


def _tokens_torch(n: int, v: int, rows, cols, s) -> torch.Tensor:
    best = _row_max(n, rows, s)
    at_best = torch.where(s == best[rows], cols, v)
    return torch.full((n,), v, dtype=torch.int64, device=s.device).scatter_reduce_(0, rows, at_best, "amin")


# CPU backend: the V-wide passes compiled (cpu_kernels) or as numpy's uint64 ufuncs on the tensors'
# memory (without masked shifts, measured 1.8x faster than torch's int64 ops, its float32 compare 7x
# faster, a tenth of torch's per-call dispatch); the few candidates in numpy, and only the logarithms
# are torch's own (the definition's bits) ---------------------------------------------------------
_TOP_PATTERN = np.uint64(((1 << TOP_BITS) - 1) << (64 - TOP_BITS))


def _top_bucket_numpy(keys: np.ndarray, vocab_size: int, device: torch.device) -> np.ndarray:
    n = keys.shape[0]
    top, chunk = _mask_and_chunk(n, vocab_size, device)
    tn = top.numpy()
    z = _buffer("hash", (chunk, vocab_size), torch.int64, device).numpy().view(np.uint64)
    tmp = _buffer("hash_tmp", (chunk, vocab_size), torch.int64, device).numpy().view(np.uint64)
    c = _counters(vocab_size, device).numpy().view(np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            zz, tt = z[:m], tmp[:m]
            np.add(c, keys[i:i + m, None], out=zz)
            np.bitwise_xor(zz, np.right_shift(zz, np.uint64(30), out=tt), out=zz)
            np.multiply(zz, np.uint64(MIX1), out=zz)
            np.bitwise_xor(zz, np.right_shift(zz, np.uint64(27), out=tt), out=zz)
            np.multiply(zz, np.uint64(MIX2), out=zz)
            # top TOP_BITS bits all ones <=> z >= their pattern (one pass instead of a shift and a compare)
            np.greater_equal(zz, _TOP_PATTERN, out=tn[i:i + m, :vocab_size])
    return tn


def _entries_numpy(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    words = np.flatnonzero(mask.view(np.int64) != 0)
    flat = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    flat = flat[mask.reshape(-1)[flat]]
    return np.divmod(flat, mask.shape[1])


def _exact_numpy(lp: np.ndarray, keys: np.ndarray, counters: np.ndarray, rows: np.ndarray,
                 cols: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = counters[cols] + keys[rows]
        z ^= z >> np.uint64(30)
        z *= np.uint64(MIX1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(MIX2)
        z ^= z >> np.uint64(31)
    u = ((z >> np.uint64(64 - UNIFORM_BITS)).astype(np.float64) + 0.5) * 2.0 ** -UNIFORM_BITS
    return _gumbel_(torch.from_numpy(u)).numpy() + lp[rows, cols].astype(np.float64)


def _candidates_numpy(lp_t: torch.Tensor, keys_t: torch.Tensor, must: torch.Tensor | None, compiled: bool):
    """The CPU backend: the two V-wide passes compiled (verification/cpu_kernels.py) or as numpy
    ufuncs (compiled=False), which select the same entries; the rest in numpy on the few candidates."""
    lp, keys = lp_t.detach().numpy(), keys_t.detach().numpy().view(np.uint64)
    counters = _counters(lp.shape[1], lp_t.device).numpy().view(np.uint64)
    n, v = lp.shape
    if compiled:
        rows1, cols1 = cpu_kernels.top_bucket_entries(keys, counters, v, _TOP_PATTERN, torch.get_num_threads())
    else:
        top = _top_bucket_numpy(keys, v, lp_t.device)
        rows1, cols1 = _entries_numpy(top)
    s1 = _exact_numpy(lp, keys, counters, rows1, cols1)
    best1 = np.full(n, -np.inf)
    np.maximum.at(best1, rows1, s1)
    row_max = lp.max(axis=-1)
    floor = np.maximum(best1, row_max.astype(np.float64) - (_G_MIN_ABS + _SLACK))
    if np.isnan(floor).any():
        return None
    thresholds = (floor - (_G_CAP + _SLACK)).astype(np.float32)
    # a row whose threshold is above its largest logprob has no entry within reach (the usual case for
    # a flat row: its best score is far above every logprob); only the other rows are compared
    if compiled:
        rows2, cols2 = cpu_kernels.entries_at_least(lp, thresholds, row_max, torch.get_num_threads())
    else:
        rows2, cols2 = _at_least_numpy(lp, thresholds, row_max, lp_t.device)
    if must is not None:
        rows2, cols2 = np.concatenate([rows2, np.arange(n)]), np.concatenate([cols2, must.detach().numpy()])
    s2 = _exact_numpy(lp, keys, counters, rows2, cols2)
    return np.concatenate([rows1, rows2]), np.concatenate([cols1, cols2]), np.concatenate([s1, s2])


def _at_least_numpy(lp: np.ndarray, thresholds: np.ndarray, row_max: np.ndarray,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of lp >= thresholds[row], row-major, comparing only rows whose maximum reaches it."""
    active = np.flatnonzero(thresholds <= row_max)
    if active.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    v = lp.shape[1]
    mask = _mask_and_chunk(active.size, v, device)[0].numpy()
    part = lp if active.size == lp.shape[0] else lp[active]
    np.greater_equal(part, thresholds[active, None], out=mask[:, :v])
    rows, cols = _entries_numpy(mask)
    return active[rows], cols


def _tokens_numpy(n: int, v: int, rows, cols, s) -> np.ndarray:
    best = np.full(n, -np.inf)
    np.maximum.at(best, rows, s)
    tokens = np.full(n, v, dtype=np.int64)
    np.minimum.at(tokens, rows, np.where(s == best[rows], cols, v))
    return tokens


def _default_backend(device: torch.device) -> str:
    """"numba" on a CPU (the compiled passes), "numpy" there without numba, "torch" elsewhere."""
    if device.type != "cpu":
        return "torch"
    return "numba" if cpu_kernels.available() else "numpy"


def _candidate_scores(lp: torch.Tensor, keys: torch.Tensor, must: torch.Tensor | None = None,
                      backend: str | None = None):
    """(rows, cols, exact scores) of entries that include every entry that can be its row's best
    (ties included), then the entries `must` [N] names (one per row, the last N); an entry may be
    listed twice (with the same score). numpy arrays on a CPU (backends "numba" and "numpy"), tensors
    elsewhere ("torch"). None when a row has a NaN logprob (argmax picks the first NaN, which no bound
    describes: the definition decides)."""
    backend = backend or _default_backend(lp.device)
    if backend == "torch":
        return _candidates_torch(lp, keys, must)
    return _candidates_numpy(lp, keys, must, compiled=backend == "numba")


def _filtered_tokens(lp: torch.Tensor, keys: torch.Tensor, backend: str | None = None) -> torch.Tensor | None:
    """sample_tokens on [N, V] by the candidate filter (None: a NaN row, for the definition)."""
    backend = backend or _default_backend(lp.device)
    found = _candidate_scores(lp, keys, backend=backend)
    if found is None:
        return None
    if backend != "torch":
        return torch.from_numpy(_tokens_numpy(*lp.shape, *found))
    return _tokens_torch(*lp.shape, *found)


def _filtered_gaps(lp: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor,
                   backend: str | None = None) -> torch.Tensor | None:
    """sampling_gap on [N, V] by the candidate filter (None: a NaN row, for the definition)."""
    backend = backend or _default_backend(lp.device)
    found = _candidate_scores(lp, keys, must=tokens, backend=backend)
    if found is None:
        return None
    n = lp.shape[0]
    rows, _, s = found
    if backend != "torch":
        best = np.full(n, -np.inf)
        np.maximum.at(best, rows, s)
        return torch.from_numpy(best - s[-n:])
    return _row_max(n, rows, s) - s[-n:]


def _flat(logprobs: torch.Tensor, keys: torch.Tensor):
    return logprobs.reshape(-1, logprobs.shape[-1]).contiguous(), keys.reshape(-1)


def _full_chunk_rows(vocab_size: int) -> int:
    return max(FULL_CHUNK_ROWS, FULL_CHUNK_ENTRIES // max(vocab_size, 1))


def sample_tokens_full(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """sample_tokens by the definition: argmax of `scores` over every entry, in row chunks."""
    lp, k = _flat(logprobs, keys)
    rows = _full_chunk_rows(lp.shape[-1])
    out = [scores(lp[i:i + rows], k[i:i + rows]).argmax(-1) for i in range(0, lp.shape[0], rows)]
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=logprobs.device)).reshape(keys.shape)


def sampling_gap_full(logprobs: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """sampling_gap by the definition: max of `scores` over every entry minus the token's."""
    lp, k = _flat(logprobs, keys)
    t = tokens.reshape(-1).long()
    rows = _full_chunk_rows(lp.shape[-1])
    out = []
    for i in range(0, lp.shape[0], rows):
        s = scores(lp[i:i + rows], k[i:i + rows])
        out.append(s.max(-1).values - s.gather(-1, t[i:i + rows].unsqueeze(-1)).squeeze(-1))
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=logprobs.device)).reshape(keys.shape)


def sample_tokens(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """logprobs [..., V] float32, keys int64 [...] -> tokens [...] int64: sample_tokens_full's
    tokens (the first index of the best score, as argmax), from the candidates' exact scores."""
    if logprobs.numel() >= FILTER_FROM_ENTRIES:
        tokens = _filtered_tokens(*_flat(logprobs, keys))
        if tokens is not None:
            return tokens.reshape(keys.shape)
    return sample_tokens_full(logprobs, keys)


def sampling_gap(logprobs: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """max_j s_j - s_token per position, float64 [...] (sampling_gap_full's values, from the
    candidates' and the token's exact scores)."""
    if logprobs.numel() >= FILTER_FROM_ENTRIES:
        gaps = _filtered_gaps(*_flat(logprobs, keys), tokens.reshape(-1).long())
        if gaps is not None:
            return gaps.reshape(keys.shape)
    return sampling_gap_full(logprobs, keys, tokens)


def sketch(hidden: torch.Tensor, vectors: torch.Tensor, scale: int) -> torch.Tensor:
    """hidden [..., d] -> int16 [..., K]: clamp(round(scale * <h/||h||, r_k>)) in float64."""
    h = hidden.double()
    unit = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    q = torch.round(unit @ vectors.to(h.device, torch.float64).T * scale)
    return q.clamp_(-SKETCH_CLAMP, SKETCH_CLAMP).to(torch.int16)
