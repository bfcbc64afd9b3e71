"""Generation with the protocol's seeded Gumbel-max sampling on Hugging Face transformers.

One KV-cached decoding pass yields, for every completion token, the token, its logprob and the
sketch of the hidden state that predicted it: the proof costs no second forward pass. Rows of a
batch are left-padded with explicit position ids, so results equal batch-1 decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from verification.model import LoadedModel, forward_hidden_logits, log_softmax_t
from verification.sampling import gumbel_noise, sample_token
from verification.sketch import sketch


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
) -> list[GeneratedRollout]:
    """Generate every request. With proofs=False the rows are sampled from torch's own RNG and no
    sketch is taken: the baseline the benchmark compares against (its output is not verifiable).
    stop_at_eos=False decodes exactly max_new_tokens per row (equal work for benchmarks; such
    rollouts are not valid protocol rollouts)."""
    max_new_tokens = lm.generation.max_new_tokens if max_new_tokens is None else max_new_tokens
    out: list[GeneratedRollout] = []
    for start in range(0, len(requests), batch_size):
        out.extend(_generate_batch(lm, requests[start:start + batch_size], sketch_vectors,
                                   max_new_tokens, proofs, stop_at_eos, on_tokens))
    return out


def _generate_batch(lm, reqs, vectors, max_new, proofs, stop_at_eos, on_tokens) -> list[GeneratedRollout]:
    b = len(reqs)
    pad = _pad_token(lm)
    width = max(len(r.prompt) for r in reqs)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, r in enumerate(reqs):
        ids[i, width - len(r.prompt):] = torch.tensor(r.prompt, dtype=torch.long)
        mask[i, width - len(r.prompt):] = 1
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    hidden, logits, cache = forward_hidden_logits(lm, ids, mask, use_cache=True)
    h_last, l_last = hidden[:, -1], logits[:, -1]
    tokens: list[list[int]] = [[] for _ in range(b)]
    lps: list[list[float]] = [[] for _ in range(b)]
    sks: list[list[np.ndarray]] = [[] for _ in range(b)]
    done = [False] * b
    for step in range(max_new):
        logp = log_softmax_t(l_last, lm.temperature).cpu().numpy()
        h_np = h_last.cpu().numpy() if proofs else None
        next_tokens = []
        for i, r in enumerate(reqs):
            if done[i]:
                next_tokens.append(pad)
                continue
            if proofs:
                noise = gumbel_noise(r.problem_seed, r.rollout_index, step, logp.shape[-1])
                tok = sample_token(logp[i], noise)
                sks[i].append(sketch(h_np[i:i + 1], vectors)[0])
            else:
                tok = int(torch.multinomial(torch.from_numpy(np.exp(logp[i])), 1))
            tokens[i].append(tok)
            lps[i].append(float(logp[i, tok]))
            if stop_at_eos and tok in lm.eos_ids:
                done[i] = True
            next_tokens.append(tok)
        if on_tokens:
            on_tokens(sum(1 for i in range(b) if len(tokens[i]) == step + 1))
        if all(done) or step == max_new - 1:
            break
        step_ids = torch.tensor(next_tokens, dtype=torch.long, device=lm.device).unsqueeze(1)
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=lm.device)], dim=1)
        positions = (mask.sum(-1, keepdim=True) - 1)
        hidden, logits, cache = forward_hidden_logits(lm, step_ids, mask, past_key_values=cache,
                                                      position_ids=positions, use_cache=True)
        h_last, l_last = hidden[:, -1], logits[:, -1]
    results = []
    for i in range(b):
        sk = np.stack(sks[i]).astype(np.int16) if proofs else np.zeros((len(tokens[i]), 0), np.int16)
        results.append(GeneratedRollout(tokens[i], np.asarray(lps[i], dtype=np.float32), sk))
    return results
