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


def noise_uniforms(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> uniforms float64 [..., V], bit-identical to the reference."""
    j = torch.arange(1, vocab_size + 1, dtype=torch.int64, device=keys.device)
    z = keys.unsqueeze(-1) + j * _GAMMA
    z = (z ^ _lsr(z, 30)) * _MIX1
    z = (z ^ _lsr(z, 27)) * _MIX2
    z = z ^ _lsr(z, 31)
    return (_lsr(z, 64 - UNIFORM_BITS).double() + 0.5) * 2.0 ** -UNIFORM_BITS


def gumbel_noise(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """keys int64 [...] -> noise float64 [..., V] (within an ulp of the reference's logarithms)."""
    return -torch.log(-torch.log(noise_uniforms(keys, vocab_size)))


def scores(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return logprobs.float().double() + gumbel_noise(keys, logprobs.shape[-1])


def sample_tokens(logprobs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """logprobs [..., V] float32, keys int64 [...] -> tokens [...] int64."""
    return scores(logprobs, keys).argmax(-1)


def sampling_gap(logprobs: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """max_j s_j - s_token per position, float64 [...]."""
    s = scores(logprobs, keys)
    return s.max(-1).values - s.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def sketch(hidden: torch.Tensor, vectors: torch.Tensor, scale: int) -> torch.Tensor:
    """hidden [..., d] -> int16 [..., K]: clamp(round(scale * <h/||h||, r_k>)) in float64."""
    h = hidden.double()
    unit = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    q = torch.round(unit @ vectors.to(h.device, torch.float64).T * scale)
    return q.clamp_(-SKETCH_CLAMP, SKETCH_CLAMP).to(torch.int16)
