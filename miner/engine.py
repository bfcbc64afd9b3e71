"""Generation with the protocol's seeded Gumbel-max sampling on Hugging Face transformers.

One KV-cached decoding pass yields, for every completion token, the token, its logprob and the
sketch of the hidden state that predicted it: the proof costs no second forward pass. Each step runs
batched tensor ops on the model's device (verification/tensor_ops.py): the noise keys of every row
are drawn once per batch (one PRF word per position) and moved to the device, the noise itself is
computed there, and only the chosen tokens, logprobs and sketches come
back, once, at the end. Rows of a batch are left-padded with explicit position ids, so results equal
batch-1 decoding.

`timing` (miner/timing.py) receives each batch's decode seconds, the proof's share of them (noise
keys, the seeded choice of each token, the sketch) and its completion tokens; measuring never
changes what is generated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from verification import tensor_ops
from miner.timing import GenerationTiming, Stopwatch
from verification.constants import SKETCH_SCALE
from verification.errors import GenerationAborted
from verification.model import LoadedModel, forward_hidden_logits, log_softmax_t
from verification.sampling import noise_keys


@dataclass(frozen=True)
class RolloutRequest:
    prompt: list[int]
    problem_seed: bytes
    rollout_index: int


@dataclass
class GeneratedRollout:
    completion: list[int]
    logprobs: np.ndarray  # float32 [C]
    sketches: np.ndarray  # int16 [C, SKETCH_DIM]


def _pad_token(lm: LoadedModel) -> int:
    pad = lm.tokenizer.pad_token_id
    return int(pad) if pad is not None else min(lm.eos_ids)


@torch.no_grad()  # grad mode is per thread: miners run in threads the global switch in load_model never reached
def generate(
    lm: LoadedModel,
    requests: Sequence[RolloutRequest],
    sketch_vectors: np.ndarray | None,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    proofs: bool = True,
    stop_at_eos: bool = True,
    on_tokens: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timing: GenerationTiming | None = None,
) -> list[GeneratedRollout]:
    """Generate every request. With proofs=False the rows are sampled from torch's own RNG and no
    sketch is taken: the baseline the benchmark compares against (its output is not verifiable).
    stop_at_eos=False decodes exactly max_new_tokens per row (equal work for benchmarks; such
    rollouts are not valid protocol rollouts). `should_stop()` is polled after every decoding step;
    True raises GenerationAborted. `timing`: each finished batch's decode and proof seconds and its
    tokens are added to it."""
    max_new_tokens = lm.generation.max_new_tokens if max_new_tokens is None else max_new_tokens
    out: list[GeneratedRollout] = []
    for start in range(0, len(requests), batch_size):
        out.extend(_generate_batch(lm, requests[start:start + batch_size], sketch_vectors,
                                   max_new_tokens, proofs, stop_at_eos, on_tokens, should_stop, timing))
    return out


def _generate_batch(lm, reqs, vectors, max_new, proofs, stop_at_eos, on_tokens, should_stop,
                    timing=None) -> list[GeneratedRollout]:
    started = time.perf_counter()
    b = len(reqs)
    dev = lm.device
    proof = Stopwatch(dev)
    pad = _pad_token(lm)
    width = max(len(r.prompt) for r in reqs)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, r in enumerate(reqs):
        ids[i, width - len(r.prompt):] = torch.tensor(r.prompt, dtype=torch.long)
        mask[i, width - len(r.prompt):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    keyed = time.perf_counter()
    keys = tensor_ops.keys_tensor(np.stack([noise_keys(r.problem_seed, r.rollout_index, max_new) for r in reqs]), dev)
    vec = torch.from_numpy(np.asarray(vectors, dtype=np.float64)).to(dev) if proofs else None
    proof.host_span(time.perf_counter() - keyed)
    eos = torch.tensor(sorted(lm.eos_ids), dtype=torch.long, device=dev)
    hidden, logits, cache = forward_hidden_logits(lm, ids, mask, use_cache=True)
    h_last, l_last = hidden[:, -1], logits[:, -1]
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    toks, lps, sks, live = [], [], [], []
    for step in range(max_new):
        logp = log_softmax_t(l_last, lm.temperature)
        if proofs:
            proof.start()
            tok = tensor_ops.sample_tokens(logp, keys[:, step])
            sks.append(tensor_ops.sketch(h_last, vec, SKETCH_SCALE))
            proof.stop()
        else:
            tok = torch.multinomial(logp.exp(), 1).squeeze(-1)
        live.append(~done)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        toks.append(tok)
        lps.append(logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1))
        if stop_at_eos:
            done = done | torch.isin(tok, eos)
        if on_tokens:
            on_tokens(int(live[-1].sum()))
        if should_stop is not None and should_stop():
            raise GenerationAborted(f"generation stopped after {step + 1} of at most {max_new} steps")
        if step == max_new - 1 or (stop_at_eos and bool(done.all())):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=dev)], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        hidden, logits, cache = forward_hidden_logits(lm, tok.unsqueeze(1), mask, past_key_values=cache,
                                                      position_ids=positions, use_cache=True)
        h_last, l_last = hidden[:, -1], logits[:, -1]
    # one transfer: [B, steps] tokens, logprobs and liveness, [B, steps, K] sketches
    tokens = torch.stack(toks, 1).cpu().numpy()
    logprobs = torch.stack(lps, 1).float().cpu().numpy()
    lengths = torch.stack(live, 1).sum(1).cpu().numpy()
    sketches = torch.stack(sks, 1).cpu().numpy() if proofs else None
    if timing is not None:  # everything above is on the host now: the batch's work is done
        timing.add(time.perf_counter() - started, proof.seconds() if proofs else 0.0, int(lengths.sum()))
    results = []
    for i in range(b):
        n = int(lengths[i])
        sk = sketches[i, :n].astype(np.int16) if proofs else np.zeros((n, 0), np.int16)
        results.append(GeneratedRollout(tokens[i, :n].tolist(), logprobs[i, :n].astype(np.float32), sk))
    return results
