"""The protocol's per-token arithmetic in torch, on whatever device holds the model: the Gumbel
noise, the sampling rule and its check (verification/sampling.py is the numpy reference; the noise
bits are identical) and the hidden-state sketch (verification/sketch.py). Batched over rows and
positions: nothing here loops in Python, and only the chosen tokens, their logprobs and sketches
(or the per-position check statistics) need leave the device.

torch has no uint64, so the 64-bit arithmetic runs in int64: addition and multiplication wrap
modulo 2^64 in two's complement on every backend, which gives the unsigned result's bits, and a
logical right shift is an arithmetic shift with the sign-extended bits masked off."""

from __future__ import annotations

import torch

from verification.sampling import GAMMA, MIX1, MIX2
from verification.constants import UNIFORM_BITS

SKETCH_CLAMP = 32767


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GAMMA, _MIX1, _MIX2 = _signed(GAMMA), _signed(MIX1), _signed(MIX2)


def _lsr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)


def keys_tensor(keys, device) -> torch.Tensor:
    """uint64 keys (numpy) as int64 bit patterns on device."""
    import numpy as np

    return torch.from_numpy(np.asarray(keys, dtype=np.uint64).view(np.int64)).to(device)


_COUNTERS: dict[tuple[int, str], torch.Tensor] = {}
# rows whose V-wide noise is computed at once: keeps the int64/float64 temporaries in cache on a
# CPU (measured: whole-batch tensors of 64 x 151,936 entries ran 10x slower per row than chunks)
NOISE_CHUNK_ROWS = 4


def _counters(vocab_size: int, device) -> torch.Tensor:
    """(j + 1) * GAMMA mod 2^64 for j < V, cached per device."""
    key = (vocab_size, str(device))
    c = _COUNTERS.get(key)
    if c is None:
        if len(_COUNTERS) > 8:
            _COUNTERS.clear()
        c = _COUNTERS[key] = torch.arange(1, vocab_size + 1, dtype=torch.int64, device=device) * _GAMMA
    return c


def _xorshift_(z: torch.Tensor, k: int) -> torch.Tensor:
    """z ^= z >>> k, in place (logical shift: the sign-extended bits are masked off)."""
    t = z >> k
    t &= (1 << (64 - k)) - 1
    return z.bitwise_xor_(t)


def noise_uniforms(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> uniforms float64 [..., V], bit-identical to the reference."""
    z = _counters(vocab_size, keys.device) + keys.unsqueeze(-1)
    _xorshift_(z, 30).mul_(_MIX1)
    _xorshift_(z, 27).mul_(_MIX2)
    _xorshift_(z, 31)
    u = _lsr(z, 64 - UNIFORM_BITS).double()
    return u.add_(0.5).mul_(2.0 ** -UNIFORM_BITS)


def gumbel_noise(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> noise float64 [..., V] (within an ulp of the reference's logarithms)."""
    return noise_uniforms(keys, vocab_size).log_().neg_().log_().neg_()


def _rows(logprobs: torch.Tensor, keys: torch.Tensor):
    """(flat logprobs [N, V], flat keys [N]) and the leading shape, for row-chunked work."""
    return logprobs.reshape(-1, logprobs.shape[-1]), keys.reshape(-1), keys.shape


def scores(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """float64(lp) + G, [..., V]."""
    return gumbel_noise(keys, logprobs.shape[-1]).add_(logprobs.float().double())


def sample_tokens(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """logprobs [..., V] float32, keys int64 [...] -> tokens [...] int64."""
    lp, k, shape = _rows(logprobs, keys)
    out = [scores(lp[i:i + NOISE_CHUNK_ROWS], k[i:i + NOISE_CHUNK_ROWS]).argmax(-1)
           for i in range(0, lp.shape[0], NOISE_CHUNK_ROWS)]
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=logprobs.device)).reshape(shape)


def sampling_gap(logprobs: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """max_j s_j - s_token per position, float64 [...]."""
    lp, k, shape = _rows(logprobs, keys)
    t = tokens.reshape(-1).long()
    out = []
    for i in range(0, lp.shape[0], NOISE_CHUNK_ROWS):
        s = scores(lp[i:i + NOISE_CHUNK_ROWS], k[i:i + NOISE_CHUNK_ROWS])
        out.append(s.max(-1).values - s.gather(-1, t[i:i + NOISE_CHUNK_ROWS].unsqueeze(-1)).squeeze(-1))
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=logprobs.device)).reshape(shape)


def sketch(hidden: torch.Tensor, vectors: torch.Tensor, scale: int) -> torch.Tensor:
    """hidden [..., d] -> int16 [..., K]: clamp(round(scale * <h/||h||, r_k>)) in float64."""
    h = hidden.double()
    unit = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    q = torch.round(unit @ vectors.to(h.device, torch.float64).T * scale)
    return q.clamp_(-SKETCH_CLAMP, SKETCH_CLAMP).to(torch.int16)
