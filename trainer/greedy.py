"""Greedy (argmax) decoding: what the model answers when it is not sampling.

A rise in sampled accuracy that only makes sampled answers match the greedy ones is sharpening, not
learning (issue 28), so every held-out measure reports greedy accuracy beside the sampled one. Not
protocol: no proof is made or checked here; the batch is left-padded and decoded with a KV cache,
and a row stops at its first end-of-sequence token (kept, as the engine keeps it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from verification.model import LoadedModel, forward_hidden_logits


def greedy_completions(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                       batch_size: int = 32) -> list[list[int]]:
    """The argmax completion of each prompt (token ids, at most max_new_tokens, EOS included when
    reached). Rows are independent: the batch size changes only memory and speed."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else min(lm.eos_ids)
    device = next(lm.model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        out.extend(_decode_batch(lm, prompts[start:start + batch_size], max_new_tokens, pad, device))
    return out


def _decode_batch(lm: LoadedModel, chunk: Sequence[Sequence[int]], max_new: int, pad: int, device) -> list[list[int]]:
    b, width = len(chunk), max(len(p) for p in chunk)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(chunk):
        if not p:
            raise ValueError("greedy decoding needs a non-empty prompt")
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    tokens: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    with torch.no_grad():
        _, logits, cache = forward_hidden_logits(lm, ids, mask, use_cache=True, last_only=True)
        for step in range(max_new):
            nxt = logits[:, -1].argmax(-1).tolist()
            feed = []
            for i in range(b):
                if not done[i]:
                    tokens[i].append(nxt[i])
                    done[i] = nxt[i] in lm.eos_ids
                feed.append(pad if done[i] else nxt[i])
            if all(done) or step == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=device)], dim=1)
            _, logits, cache = forward_hidden_logits(lm, torch.tensor(feed, device=device).unsqueeze(1), mask,
                                                     past_key_values=cache, use_cache=True, last_only=True,
                                                     position_ids=mask.sum(-1, keepdim=True) - 1)
    return tokens

