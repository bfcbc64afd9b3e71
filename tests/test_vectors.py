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
from verification.sampling import cdf, sample_token, sampling_distance, uniforms

VECTORS = Path(__file__).resolve().parent / "vectors"


def test_sampling_vectors():
    doc = json.loads((VECTORS / "sampling.json").read_text())
    assert doc["prf_prefix"].encode() == PRF_PREFIX
    for case in doc["uniform_streams"]:
        seed = bytes.fromhex(case["problem_seed"])
        n = len(case["uniforms"])
        assert prf_bytes(8 * n, "sample", seed, case["rollout_index"]).hex() == case["words_hex"]
        assert [float(x).hex() for x in uniforms(seed, case["rollout_index"], n)] == case["uniforms"]
        # the uniform by its definition, from the words
        words = np.frombuffer(bytes.fromhex(case["words_hex"]), dtype="<u8")
        assert [((int(w) >> 11) + 0.5) / 2**53 for w in words] == [float.fromhex(x) for x in case["uniforms"]]
    s = doc["sampling"]
    lp = torch.log_softmax(torch.tensor(s["logits_float32"], dtype=torch.float32) / s["temperature"], -1)
    assert [float(x).hex() for x in lp.numpy()] == s["logprobs_float32_hex"]
    for pos in s["positions"]:
        u = float.fromhex(pos["u"])
        assert sample_token(lp.numpy(), u) == pos["token"]
        assert tensor_ops.sample_tokens(lp.unsqueeze(0), torch.tensor([u], dtype=torch.float64)).item() == pos["token"]
        assert float(cdf(lp.numpy())[pos["token"]]).hex() == pos["cdf_hi"]
        assert float(sampling_distance(lp.numpy(), u, (pos["token"] + 1) % 6)).hex() == pos["distance_token_plus_1"]
