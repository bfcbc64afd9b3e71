"""The sampling proof: seeded Gumbel-max sampling.

A completion token at position i of rollout r in the group with problem seed S is
    token_i = argmax_j ( log_softmax(logits_i / T)_j + G_j ),
    G_j     = -ln(-ln(u_j)),  u_j = (w_j + 0.5) / 2^32,
    w       = little-endian uint32 words of SHAKE-256 over PRF framing ("gumbel", S, r, i), V words.
The noise is fixed by public randomness, so the whole rollout is a deterministic function of the
model and the challenge: a validator that recomputes the logits can check every token.
"""

from __future__ import annotations

import numpy as np

from verification.constants import GUMBEL_BYTES_PER_ENTRY, GUMBEL_MARGIN
from verification.prf import prf_bytes

_SCALE = 2.0**-32


def gumbel_noise(problem_seed: bytes, rollout_index: int, position: int, vocab_size: int) -> np.ndarray:
    raw = prf_bytes(GUMBEL_BYTES_PER_ENTRY * vocab_size, "gumbel", problem_seed, rollout_index, position)
    u = (np.frombuffer(raw, dtype="<u4").astype(np.float64) + 0.5) * _SCALE
    return -np.log(-np.log(u))


def sample_token(logprobs: np.ndarray, noise: np.ndarray) -> int:
    """The protocol's sampling rule on one position (logprobs already at temperature T)."""
    return int(np.argmax(logprobs.astype(np.float64) + noise))


def sampling_gap(logprobs: np.ndarray, noise: np.ndarray, token: int) -> float:
    """max_j score_j - score_token >= 0; the token passes when the gap is <= GUMBEL_MARGIN."""
    scores = logprobs.astype(np.float64) + noise
    return float(scores.max() - scores[token])


def token_passes(gap: float, margin: float = GUMBEL_MARGIN) -> bool:
    return gap <= margin
