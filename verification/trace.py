"""The intermediate values of a verification, for an auditor: `rollproof verify --trace`.

Re-derives, with the protocol's own functions, what the Verifier compares: the pinned round and
the window seed, each checked group's problem seed and derived problem, the sketch key, and per
position of every checked rollout the recomputed token logprob, sampling gap and sketch next to the
bundle's, with the distance each check measures. A third-party implementation can diff its own
values against these position by position. Nothing here decides a verdict: the Verifier does.
"""

from __future__ import annotations

import numpy as np

from verification import environments
from verification.bundle import Bundle
from verification.challenge import problem_round, problem_seed, sketch_key, window_seed
from verification.constants import GUMBEL_MARGIN, LOGPROB_ABS_TOL, SKETCH_TOL
from verification.drand import ChainInfo, verify_beacon
from verification.errors import BeaconError
from verification.sampling import noise_keys
from verification.sketch import sketch_distance, sketch_vectors


def trace_bundle(lm, networks: list[ChainInfo], bundle: Bundle, groups: list[int]) -> dict:
    """JSON-ready trace of `groups` of `bundle` under model `lm` and the accepted beacon networks.
    Stops after the window part when the beacon does not verify (no seed can be derived)."""
    h = bundle.header
    beacon = h.beacon.to_beacon()
    out: dict = {"netuid": h.netuid, "window": h.window, "hotkey": h.hotkey, "block_hash": h.block_hash,
                 "block_time": h.block_time, "beacon_chain": beacon.chain_hash.hex(), "beacon_round": beacon.round,
                 "model_fingerprint": h.model_fingerprint, "loaded_fingerprint": lm.fingerprint.hex(),
                 "tolerances": {"sketch": SKETCH_TOL, "logprob": LOGPROB_ABS_TOL, "sampling_margin": GUMBEL_MARGIN}}
    info = {n.chain_hash(): n for n in networks}.get(beacon.chain_hash)
    if info is None:
        out["beacon_error"] = "the beacon's chain is not an accepted network"
        return out
    pinned = problem_round(info, h.block_time)
    out["pinned_round"] = pinned
    try:
        randomness = verify_beacon(info, beacon, expected_round=pinned)
    except BeaconError as exc:
        out["beacon_error"] = str(exc)
        return out
    ws = window_seed(h.netuid, h.window, bytes.fromhex(h.block_hash), randomness)
    key = sketch_key(ws)
    vectors = sketch_vectors(key, lm.hidden_size)
    out.update(beacon_randomness=randomness.hex(), window_seed=ws.hex(), sketch_key=key.hex(),
               checked_groups=list(groups), groups=[])
    by_index = {g.index: g for g in bundle.groups}
    for gi in groups:
        g = by_index[gi]
        seed = problem_seed(ws, h.hotkey, gi)
        env_name, problem = environments.problem_for(seed, lm.generation)
        entry = {"group": gi, "problem_seed": seed.hex(), "environment": env_name, "bundle_environment": g.environment,
                 "prompt": problem.prompt, "prompt_tokens": lm.chat_prompt_ids(problem.prompt),
                 "bundle_prompt_tokens": g.prompt.tolist(), "rollouts": []}
        in_vocab = [r for r in g.rollouts if len(r.completion) and int(r.completion.max()) < lm.vocab_size]
        keys = [noise_keys(seed, r.index, len(r.completion)) for r in in_vocab]
        recomputed = lm.recompute_proofs(g.prompt.tolist(), [r.completion.astype(np.int64) for r in in_vocab],
                                         keys, vectors) if in_vocab else []
        for r, k, (sk, lp, gap) in zip(in_vocab, keys, recomputed):
            entry["rollouts"].append({
                "rollout": r.index, "reward": r.reward, "advantage": r.advantage,
                "positions": [{"token": int(t), "noise_key": int(nk), "logprob": float(blp),
                               "logprob_recomputed": float(rlp), "logprob_error": float(abs(float(blp) - float(rlp))),
                               "sampling_gap": float(gp), "sketch": bs.tolist(), "sketch_recomputed": rs.tolist(),
                               "sketch_distance": int(d)}
                              for t, nk, blp, rlp, gp, bs, rs, d in zip(
                                  r.completion, k, r.logprobs, lp, gap, r.sketches, sk,
                                  sketch_distance(r.sketches, sk))]})
        done = {r.index for r in in_vocab}
        skipped = [r.index for r in g.rollouts if r.index not in done]
        if skipped:
            entry["not_recomputed"] = {"rollouts": skipped, "why": "empty, or a token id outside the vocabulary"}
        out["groups"].append(entry)
    return out
