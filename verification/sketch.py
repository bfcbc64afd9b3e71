"""Per-token hidden-state commitment ("sketch").

For the final (normed) hidden state h in R^d that predicted a token, the sketch is the int16 vector
    q_k = clamp(round(SKETCH_SCALE * <h / ||h||, r_k>), -32767, 32767),   k = 1..SKETCH_DIM
with r_k in {-1,+1}^d taken from the bits of SHAKE-256("sketch-vectors", sketch_key, d):
bit b of the stream (least significant bit of each byte first) is 1 -> +1, 0 -> -1, row-major.
A token passes when max_k |q_k - q'_k| <= SKETCH_TOL against the recomputed q'.
"""

from __future__ import annotations

import numpy as np

from verification.constants import SKETCH_DIM, SKETCH_SCALE
from verification.prf import prf_bytes


def sketch_vectors(key: bytes, hidden_size: int, dim: int = SKETCH_DIM) -> np.ndarray:
    n_bits = dim * hidden_size
    raw = np.frombuffer(prf_bytes((n_bits + 7) // 8, "sketch-vectors", key, hidden_size), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:n_bits]
    return (bits.astype(np.float64) * 2.0 - 1.0).reshape(dim, hidden_size)


def sketch(hidden: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """hidden: [n, d] float array -> [n, SKETCH_DIM] int16."""
    h = np.asarray(hidden, dtype=np.float64)
    norms = np.linalg.norm(h, axis=-1, keepdims=True)
    unit = h / np.maximum(norms, 1e-30)
    q = np.rint(unit @ vectors.T * SKETCH_SCALE)
    return np.clip(q, -32767, 32767).astype(np.int16)


def sketch_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-token L-infinity distance in fixed-point units."""
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).max(axis=-1)


