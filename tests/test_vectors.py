"""Known-answer vectors (tests/vectors/*.json): the protocol's numbers pinned, so an independent
implementation of docs/protocol.md can check itself against them and a change to the reference that
moves any of them fails here."""

import json
from pathlib import Path

import numpy as np
import torch

from verification import tensor_ops
from verification.constants import PRF_PREFIX
from verification.prf import prf_bytes
from verification.sampling import GAMMA, MIX1, MIX2, gumbel_noise, noise_keys, noise_uniforms, sample_token, sampling_gap

VECTORS = Path(__file__).resolve().parent / "vectors"
M64 = (1 << 64) - 1


def _uniform_by_definition(key: int, j: int) -> float:
    """docs/protocol.md section 5 in plain integers: splitmix64's finalizer over key + (j+1) GAMMA."""
    z = (key + (j + 1) * GAMMA) & M64
    z = ((z ^ (z >> 30)) * MIX1) & M64
    z = ((z ^ (z >> 27)) * MIX2) & M64
    z ^= z >> 31
    return ((z >> 11) + 0.5) / 2**53


def test_sampling_vectors():
    doc = json.loads((VECTORS / "sampling.json").read_text())
    assert doc["prf_prefix"].encode() == PRF_PREFIX
    for case in doc["key_streams"]:
        seed = bytes.fromhex(case["problem_seed"])
        n = len(case["keys"])
        assert prf_bytes(8 * n, "gumbel-key", seed, case["rollout_index"]).hex() == case["key_words_hex"]
        keys = noise_keys(seed, case["rollout_index"], n)
        assert [str(int(k)) for k in keys] == case["keys"]
        words = bytes.fromhex(case["key_words_hex"])
        assert [int.from_bytes(words[8 * i:8 * i + 8], "little") for i in range(n)] == [int(k) for k in case["keys"]]
        first = [float(x).hex() for x in noise_uniforms(int(keys[0]), 6)]
        assert first == case["uniforms_first_6_of_key_0"]
        assert [_uniform_by_definition(int(keys[0]), j).hex() for j in range(6)] == first
    s = doc["sampling"]
    lp = torch.log_softmax(torch.tensor(s["logits_float32"], dtype=torch.float32) / s["temperature"], -1)
    assert [float(x).hex() for x in lp.numpy()] == s["logprobs_float32_hex"]
    for pos in s["positions"]:
        key = int(pos["key"])
        assert [float(x).hex() for x in noise_uniforms(key, 6)] == pos["uniforms"]
        g = gumbel_noise(key, 6)
        assert sample_token(lp.numpy(), g) == pos["token"]
        kt = tensor_ops.keys_tensor(np.array([key], dtype=np.uint64), "cpu")
        assert tensor_ops.sample_tokens(lp.unsqueeze(0), kt).item() == pos["token"]
        assert abs(sampling_gap(lp.numpy(), g, (pos["token"] + 1) % 6) - float(pos["gap_of_token_plus_1"])) < 1e-12
