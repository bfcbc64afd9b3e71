"""The sampling proof: seeded Gumbel-max sampling with counter-based noise (protocol v3), numpy
reference.

A completion token at position i of rollout r in the group with problem seed S is
    k_i     = little-endian uint64 word i of PRF_bytes(8 n, "gumbel-key", S, r)   (one word per position)
    z_ij    = mix64(k_i + (j + 1) * GAMMA)  mod 2^64                              (j < V: the vocabulary index)
    u_ij    = (floor(z_ij / 2^11) + 0.5) / 2^53,   G_ij = -ln(-ln(u_ij))           (float64)
    token_i = argmax_j ( float64(lp_ij) + G_ij ),  lp = log_softmax(logits_i / T) in float32
where mix64 is the splitmix64 finalizer (three xor-shift-multiply steps, constants below). The
noise is a pure function of one PRF word and the index, in 64-bit integer arithmetic that every
device computes bit for bit, so it is generated where the logits are (verification/tensor_ops.py,
which the miner and the verifier run; tests compare it with this reference bit for bit). The rollout
is a deterministic function of the model and the challenge: a validator that recomputes the logits
checks every token. A token passes when its perturbed score is within GUMBEL_MARGIN of the best.
"""

from __future__ import annotations

import numpy as np

from verification.constants import GUMBEL_MARGIN, UNIFORM_BITS
from verification.prf import prf_bytes

# splitmix64 (Steele, Lea, Flood 2014): the increment and the finalizer's multipliers.
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_SHIFT = 64 - UNIFORM_BITS
_SCALE = 2.0 ** -UNIFORM_BITS


def noise_keys(problem_seed: bytes, rollout_index: int, n: int) -> np.ndarray:
    """k_0..k_{n-1} of one rollout (uint64). A prefix of a longer call (SHAKE-256 is an XOF)."""
    return np.frombuffer(prf_bytes(8 * n, "gumbel-key", problem_seed, rollout_index), dtype="<u8").astype(np.uint64)


def mix64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def noise_uniforms(key: int, vocab_size: int) -> np.ndarray:
    """u_0..u_{V-1} for one position's key, float64 (exact: every device computes these bits)."""
    j = np.arange(1, vocab_size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = mix64(np.uint64(key) + j * np.uint64(GAMMA))
    return ((z >> np.uint64(_SHIFT)).astype(np.float64) + 0.5) * _SCALE


def gumbel_noise(key: int, vocab_size: int) -> np.ndarray:
    """G_0..G_{V-1} for one position's key, float64. The two logarithms may differ by an ulp between
    math libraries (1e-16 relative), which GUMBEL_MARGIN absorbs."""
    return -np.log(-np.log(noise_uniforms(key, vocab_size)))


def sample_token(logprobs: np.ndarray, noise: np.ndarray) -> int:
    """The protocol's sampling rule on one position (logprobs already at temperature T)."""
    return int(np.argmax(np.asarray(logprobs, dtype=np.float32).astype(np.float64) + noise))


def sampling_gap(logprobs: np.ndarray, noise: np.ndarray, token: int) -> float:
    """max_j score_j - score_token >= 0; the token passes when the gap is <= GUMBEL_MARGIN."""
    scores = np.asarray(logprobs, dtype=np.float32).astype(np.float64) + noise
    return float(scores.max() - scores[token])


def token_passes(gap: float, margin: float = GUMBEL_MARGIN) -> bool:
    return gap <= margin
