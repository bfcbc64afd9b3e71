"""The protocol's sampler as vLLM's worker runs it (miner/vllm_worker.py), driven through vLLM's own
interface objects without an engine: under the V1 runner's batch updates (what the CPU build runs)
and the V2 runner's slots and contexts (the GPU release's default, which cannot start here: its
runner needs Triton). Each row of a rollproof request must keep exactly one finite logit, the
protocol's token from that row's logprobs and key, and the record must hold that token, its
logprob and the sketch of the row's hidden state; other requests' rows are untouched."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from verification import tensor_ops
from verification.constants import SKETCH_SCALE
from verification.sampling import noise_keys
from verification.sketch import sketch_vectors

# vLLM is imported inside the tests: where it is missing, tests/conftest.py skips them (or, under CI,
# fails them) with the command that installs it
pytestmark = pytest.mark.vllm


def SamplingParams(**kw):
    from vllm import SamplingParams as Params

    return Params(**kw)


@pytest.fixture()
def vllm_worker():
    from miner import vllm_worker as module

    return module


@pytest.fixture()
def v1():
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    return BatchUpdate, MoveDirectionality

V, D, T = 1000, 24, 0.7
SEED, KEY = b"\x11" * 32, b"\x22" * 32


def _params(rid: str, rollout: int, max_new: int = 8):
    return SamplingParams(max_tokens=max_new, extra_args={"rollproof": {
        "id": rid, "seed": SEED.hex(), "rollout": rollout, "max_new": max_new, "temperature": T,
        "sketch_key": KEY.hex()}})


def _expected(logits_row: torch.Tensor, hidden_row: torch.Tensor, rollout: int, index: int):
    lp = torch.log_softmax(logits_row.float() / T, dim=-1)
    key = tensor_ops.keys_tensor(noise_keys(SEED, rollout, index + 1)[index:index + 1], "cpu")
    tok = int(tensor_ops.sample_tokens(lp.unsqueeze(0), key)[0])
    sk = tensor_ops.sketch(hidden_row.unsqueeze(0), torch.from_numpy(sketch_vectors(KEY, D)), SKETCH_SCALE)[0]
    return tok, float(lp[tok]), sk.numpy()


def _collect(vllm_worker, rid: str) -> dict:
    rec = vllm_worker.RollproofWorker().rollproof_collect([rid])[rid]
    rec["logprobs"] = np.frombuffer(rec["logprobs"], np.float32)
    if rec["sketches"] is not None:  # None: no position was ever sampled
        rec["sketches"] = np.frombuffer(rec["sketches"], np.int16).reshape(len(rec["tokens"]), -1)
    return rec


def _only(row: torch.Tensor) -> int:
    finite = torch.isfinite(row).nonzero().flatten().tolist()
    assert len(finite) == 1 and float(row[finite[0]]) == 0.0, finite
    return finite[0]


def test_v1_batch_updates_moves_and_token_indices(vllm_worker, v1):
    BatchUpdate, MoveDirectionality = v1
    gen = torch.Generator().manual_seed(0)
    proc = vllm_worker.ProtocolSampler(None, torch.device("cpu"), False)
    assert not proc.is_argmax_invariant()  # greedy requests must run it too
    out_a: list[int] = []
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, _params("v1-a", 3), [1, 2, 3], out_a), (1, SamplingParams(max_tokens=8), [4, 5], [])]))
    for step in range(3):
        row = 0 if step < 2 else 1  # after two tokens the batch swaps its two requests
        if step == 2:
            proc.update_state(BatchUpdate(batch_size=2, removed=[], added=[],
                                          moved=[(0, 1, MoveDirectionality.SWAP)]))
        logits = torch.randn(2, V, generator=gen) * 4
        hidden = torch.randn(2, D, generator=gen)
        vllm_worker._HIDDEN[0] = hidden
        before = logits.clone()
        after = proc.apply(logits)
        tok, lp, sk = _expected(before[row], hidden[row], 3, step)
        assert _only(after[row]) == tok
        assert torch.equal(after[1 - row], before[1 - row])  # the other request's row is untouched
        out_a.append(tok)  # vLLM appends the sampled token to the running output list
        rec = vllm_worker._RECORDS["v1-a"]
        assert rec.tokens[step] == tok and rec.logprobs[step] == np.float32(lp)
        assert np.array_equal(rec.sketches[step], sk)
    rec = _collect(vllm_worker, "v1-a")
    assert rec["filled"][:3] == [True] * 3 and rec["filled"][3:] == [False] * 5 and rec["tokens"][:3] == out_a
    assert "v1-a" not in vllm_worker._RECORDS  # collected once
    proc.update_state(BatchUpdate(batch_size=1, removed=[1], added=[], moved=[]))
    assert proc.slots == {}


def test_v2_slots_positions_and_unfinished_prompt_chunks(vllm_worker):
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

    gen = torch.Generator().manual_seed(1)
    prompt_len = np.zeros(8, dtype=np.int32)
    prompt_len[[2, 5]] = [10, 6]
    states = LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=8, vocab_size=V, all_token_ids=None,
                                    prompt_len=SimpleNamespace(np=prompt_len), prefill_len=None, total_len=None)
    proc = vllm_worker.ProtocolSampler(None, states)
    assert proc.add_request(2, _params("v2-a", 0)) and proc.add_request(5, _params("v2-b", 1))
    assert not proc.add_request(6, SamplingParams(max_tokens=4))  # not a rollproof request
    # rows: slot 5 at position 6 + 4 - 1 (its fifth token), slot 2 mid-prompt (a chunk: no token),
    # slot 6 (someone else's request)
    mapping = torch.tensor([5, 2, 6])
    pos = torch.tensor([6 + 4 - 1, 4, 30])
    ctx = LogitsContext(expanded_idx_mapping=mapping, idx_mapping=mapping, idx_mapping_np=mapping.numpy(),
                        expanded_local_pos=torch.zeros(3, dtype=torch.long), input_ids=torch.zeros(3, dtype=torch.long),
                        pos=pos, seq_lens_upper_bound_np=(pos + 1).numpy())
    logits = torch.randn(3, V, generator=gen) * 4
    hidden = torch.randn(3, D, generator=gen)
    vllm_worker._HIDDEN[0] = hidden
    before = logits.clone()
    after = proc.apply(logits, ctx)
    tok, lp, sk = _expected(before[0], hidden[0], 1, 4)
    assert _only(after[0]) == tok
    assert torch.equal(after[1:], before[1:])  # the unfinished prompt and the other request: untouched
    b = _collect(vllm_worker, "v2-b")
    assert b["filled"] == [False] * 4 + [True] + [False] * 3 and b["tokens"][4] == tok
    assert b["logprobs"][4] == np.float32(lp) and np.array_equal(b["sketches"][4], sk)
    a = _collect(vllm_worker, "v2-a")
    assert a["filled"] == [False] * 8 and a["sketches"] is None  # its prompt chunk recorded nothing
    assert proc.add_request(2, SamplingParams(max_tokens=4)) is False and 2 not in proc.slots  # a recycled slot


def test_a_row_beyond_max_new_and_a_missing_hidden_state_are_recorded_as_errors(vllm_worker, v1):
    BatchUpdate, _ = v1
    proc = vllm_worker.ProtocolSampler(None, torch.device("cpu"), False)
    out = list(range(8))  # already max_new tokens
    proc.update_state(BatchUpdate(batch_size=1, removed=[], moved=[], added=[(0, _params("e-a", 0), [1], out)]))
    vllm_worker._HIDDEN[0] = None
    logits = torch.randn(1, V)
    assert torch.equal(proc.apply(logits.clone()), logits)  # nothing to sample: left as it is
    out.clear()
    proc.apply(torch.randn(1, V))  # index 0, but compute_logits was never wrapped: no hidden state
    errors = vllm_worker.RollproofWorker().rollproof_collect(["e-a"])["e-a"]["errors"]
    assert "beyond max_new" in errors[0] and "no hidden state" in errors[1]


def test_a_request_without_every_key_is_refused_at_admission(vllm_worker):
    bad = SamplingParams(max_tokens=4, extra_args={vllm_worker.EXTRA_KEY: {"id": "x", "seed": SEED.hex()}})
    with pytest.raises(ValueError, match="lacks"):
        vllm_worker.ProtocolSampler.validate_params(bad)
    vllm_worker.ProtocolSampler.validate_params(_params("ok", 0))
