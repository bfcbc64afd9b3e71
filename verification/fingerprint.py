"""Model fingerprint: what "the agreed model" means, as 32 bytes.

    leaf(t)      = PRF("tensor", name, dtype, shape as "d0,d1,..", SHA-256(little-endian C-order bytes))
    tensors_root = merkle_root(leaf(t) for t in tensors sorted by name)
    fingerprint  = PRF("model", tensors_root, SHA-256(tokenizer.json), SHA-256(chat_template),
                       SHA-256(canonical JSON of the generation settings))
Tensors are taken from the model's state dict as float32 (the protocol's compute precision).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from verification.canonical import canonical_json
from verification.merkle import merkle_root
from verification.prf import prf


def tensor_leaf(name: str, array: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = arr.astype(dtype, copy=False)
    shape = ",".join(str(d) for d in arr.shape)
    return prf("tensor", name, arr.dtype.str, shape, hashlib.sha256(arr.tobytes()).digest())


def tensors_root(named_arrays: Iterable[tuple[str, np.ndarray]]) -> bytes:
    leaves = sorted((name, tensor_leaf(name, arr)) for name, arr in named_arrays)
    names = [n for n, _ in leaves]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    return merkle_root([leaf for _, leaf in leaves])


def model_fingerprint(root: bytes, tokenizer_json: str, chat_template: str, generation: dict) -> bytes:
    gen = canonical_json(generation)
    return prf(
        "model",
        root,
        hashlib.sha256(tokenizer_json.encode()).digest(),
        hashlib.sha256(chat_template.encode()).digest(),
        hashlib.sha256(gen).digest(),
    )
