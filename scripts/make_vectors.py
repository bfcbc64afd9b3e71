"""Write the known-answer vectors of docs/protocol.md: tests/vectors/*.json.

    python3 scripts/make_vectors.py            # (re)write every file
    python3 scripts/make_vectors.py --check    # exit 1 if any file differs from what the code gives

Every value is computed by the reference implementation from fixed inputs, so the output is the same
on every run and machine, with one exception: sr25519 signatures are randomized, so the bundle and
checkpoint vectors keep the signature already stored in tests/vectors/bundle.json and checkpoint.json
when it still verifies for the recomputed header or manifest (a fresh one is made only when the signed
message changes); likewise the stored adapter file is kept while it holds exactly the recomputed
tensors (safetensors lays out the bytes). tests/test_vectors.py
calls the same builders and compares with the stored files, and re-derives a part of each from the
document's definitions.

Files (each is json.dumps(doc, indent=1) + "\\n"; binary values are lowercase hex, uint64 values are
decimal strings, floats are float.hex() strings where exact):
    prf.json          section 2: framing, PRF, PRF_bytes, word stream, uniform_below, sample_distinct,
                      Merkle roots, canonical JSON
    drand.json        section 3: pinned chain hashes, the local drand key and signed rounds, round_at
    challenge.json    section 4: window/problem/sketch/opening seeds, rounds, checked groups, env choice
    sampling.json     section 5: Gumbel key streams, uniforms, a six-token distribution
    sketch.json       section 6: sketch vectors and sketches
    model.json        section 7 and appendix C: the tiny model's weights, tokenizer, fingerprint
    environments.json section 8: prompts, answers, rewards of sample completions, advantages
    bundle.json       sections 9, 10, 12, 13: a full two-group bundle of the tiny model (under the base
                      generation params with groups = 2, its fingerprint by definition), its verdicts,
                      row digests, rows_root, header signing message, commitment, verified_root
    checkpoint.json   section 15: a LoRA checkpoint of the tiny model: adapter tensors and file, tensors_root,
                      lora weights_root, fingerprint, manifest bytes, SHA-256, signing message, signature,
                      merged weights of the adapted modules
    announcement.json sections 12, 15: rc3 announcements of that checkpoint in both location forms, and
                      byte strings a reader refuses
    training.json     section 16: a training record assembled from fixed values (every kind of event, the
                      default trainer settings, bundle.json's verified rows as leaves), its start adapter
                      and optimizer files, and records a reader refuses
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from verification import environments  # noqa: E402
from verification.constants import REASONING_GYM_VERSION  # noqa: E402
from verification.environments import library  # noqa: E402
from verification.canonical import canonical_json  # noqa: E402
from verification.challenge import (  # noqa: E402
    groups_to_check,
    opening_round,
    opening_seed,
    problem_round,
    problem_seed,
    sketch_key,
    window_deadline_block,
    window_seed,
    window_start_block,
)
from verification.constants import BASE_GENERATION, PRF_PREFIX  # noqa: E402
from verification.drand import DEFAULT, QUICKNET  # noqa: E402
from verification.drand_local import LocalDrand  # noqa: E402
from verification.generation import GenerationParams  # noqa: E402
from verification.grpo import advantages  # noqa: E402
from verification.merkle import merkle_root  # noqa: E402
from verification.prf import _frame, prf, prf_bytes, sample_distinct, uniform_below, word_stream  # noqa: E402
from verification.sampling import gumbel_noise, noise_keys, noise_uniforms, sample_token, sampling_gap  # noqa: E402
from verification.sketch import sketch, sketch_vectors  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
BLS12_381_R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
ALICE_URI = "//Alice"


def _hex_floats(values) -> list[str]:
    return [float(v).hex() for v in values]


def _part_json(part) -> dict:
    if isinstance(part, bytes):
        return {"bytes": part.hex()}
    if isinstance(part, str):
        return {"str": part}
    return {"int": str(part)}


# ---- section 2 ---------------------------------------------------------------------------------
def prf_vectors() -> dict:
    frames = []
    cases = [
        ("merkle-empty", ()),
        ("window", (3, 7, b"\x42" * 32, bytes(range(32)))),
        ("problem", (prf("vectors/window-seed"), "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", 11)),
        ("vectors/types", (b"", "", 0, (1 << 64) - 1, "h\u00e9llo \u2713", b"\x00\xff")),
    ]
    for domain, parts in cases:
        frames.append({
            "domain": domain,
            "parts": [_part_json(p) for p in parts],
            "frame_hex": _frame(domain, parts).hex(),
            "prf_hex": prf(domain, *parts).hex(),
            "prf_bytes_40_hex": prf_bytes(40, domain, *parts).hex(),
        })
    key = prf("vectors/word-stream")
    words = word_stream(key)
    first = [next(words) for _ in range(8)]
    draws = []
    words = word_stream(key)
    consumed = 0
    counting = _counting(words)
    for n in (1, 2, 3, 10, 81, (1 << 63) + 1, (1 << 63) + 1, (1 << 63) + 1, (1 << 64) - 1, 1000):
        before = counting.count
        value = uniform_below(counting, n)
        draws.append({"n": str(n), "value": str(value), "words_consumed": counting.count - before})
        consumed = counting.count
    distinct = []
    for label, n, k in (("a", 12, 4), ("b", 3, 3), ("c", 2, 5), ("d", 0, 4), ("e", 1, 1), ("f", 256, 4), ("g", 5, 0)):
        dkey = prf("vectors/sample-distinct", label)
        distinct.append({"key": dkey.hex(), "n": n, "k": k, "chosen": sample_distinct(dkey, n, k)})
    leaves = [prf("vectors/leaf", i) for i in range(6)]
    merkle = {"leaves": [x.hex() for x in leaves],
              "roots_of_first_n_leaves": [merkle_root(leaves[:n]).hex() for n in range(len(leaves) + 1)]}
    canon = []
    for obj in (
        {"b": 1, "a": [True, False, None], "B": -12345678901234567890, "": "x"},
        {"s": "caf\u00e9 \u2713 \U0001F600", "ctl": "\x00\x1f\x7f\t\n\"\\/"},
        {"report_scores": [0.0, 1.0, 22.627416997969522, 2097152.0, float(3) ** 1.5]},
    ):
        canon.append({"python_repr": repr(obj), "canonical": canonical_json(obj).decode("ascii")})
    return {
        "comment": "docs/protocol.md section 2. Integers of PRF parts and of uniform_below are decimal strings.",
        "prf_prefix": PRF_PREFIX.decode(),
        "frames": frames,
        "word_stream": {"key": key.hex(), "block_0_sha256": hashlib.sha256(key + bytes(8)).hexdigest(),
                        "first_8_words": [str(w) for w in first]},
        "uniform_below": {"key": key.hex(), "comment": "successive draws from one word stream of key",
                          "draws": draws, "words_consumed_total": consumed},
        "sample_distinct": distinct,
        "merkle": merkle,
        "canonical_json": canon,
    }


class _counting:
    """A word stream that counts the words taken from it."""

    def __init__(self, words):
        self.words, self.count = words, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        return next(self.words)


# ---- section 3 ---------------------------------------------------------------------------------
def drand_vectors() -> dict:
    nets = {}
    for info in (QUICKNET, DEFAULT):
        nets[info.name] = {"scheme": info.scheme, "public_key": info.public_key.hex(), "period": info.period,
                           "genesis_time": info.genesis_time, "group_hash": info.group_hash.hex(),
                           "beacon_id": info.beacon_id, "chain_hash": info.chain_hash().hex()}
    local = LocalDrand()
    info = local.info
    secret = int.from_bytes(prf("local-drand-key", local.seed), "big") % BLS12_381_R
    rounds = []
    for r in (1, 2, 1000, 3337):
        b = local.sign(r)
        rounds.append({"round": r, "signature": b.signature.hex(), "randomness": b.randomness.hex(),
                       "message_sha256_u64be_round": hashlib.sha256(r.to_bytes(8, "big")).hexdigest()})
    times = [info.genesis_time - 1, info.genesis_time, info.genesis_time + 2, info.genesis_time + 3, 1_700_010_000]
    return {
        "comment": "docs/protocol.md section 3. chain_hash = SHA-256(u32be(period) || i64be(genesis) || "
                   "public_key || group_hash || beacon_id) (beacon_id omitted for default).",
        "bls12_381_r": hex(BLS12_381_R),
        "public_networks": nets,
        "local": {
            "seed": local.seed,
            "secret_key_be": secret.to_bytes(32, "big").hex(),
            "prf_local_drand_key": prf("local-drand-key", local.seed).hex(),
            "public_key": info.public_key.hex(),
            "group_hash": info.group_hash.hex(),
            "beacon_id": info.beacon_id,
            "genesis_time": info.genesis_time,
            "period": info.period,
            "scheme": info.scheme,
            "chain_hash": info.chain_hash().hex(),
            "rounds": rounds,
            "round_at": [{"time": t, "round": info.round_at(t)} for t in times],
        },
    }


# ---- section 4 ---------------------------------------------------------------------------------
def _context():
    """The window every vector uses: netuid 3, window 7 on the local drand (tests/conftest.make_ctx)."""
    from verification.window import WindowContext

    drand = LocalDrand()
    window, netuid, block_hash = 7, 3, b"\x42" * 32
    block_time = drand.genesis_time + 10_000 + window * 240
    rnd = drand.info.round_at(block_time)
    return WindowContext(netuid, window, block_hash, block_time, drand.sign(rnd))


ALICE_SS58 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
MIX = {"temperature_milli": 1000, "group_size": 4, "groups": 8, "max_new_tokens": 16, "environments": [
    {"name": "add", "weight": 3, "params": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 4,
                                           "format_credit_milli": 100}},
    {"name": "sat", "weight": 2, "params": {"min_vars": 3, "max_vars": 5, "clause_ratio_milli": 1600, "k": 3}},
    {"name": "arith", "weight": 1, "params": {}},
]}


def challenge_vectors() -> dict:
    ctx = _context()
    drand = LocalDrand()
    ws = window_seed(ctx.netuid, ctx.window, ctx.block_hash, ctx.beacon.randomness)
    seeds = [problem_seed(ws, ALICE_SS58, g) for g in range(4)]
    deadline_time = ctx.block_time + 240  # the vector's chain: 12 s per block, 20 blocks per window
    o_round = opening_round(drand.info, deadline_time)
    o_beacon = drand.sign(o_round)
    o_seed = opening_seed(ctx.netuid, ctx.window, o_beacon.randomness)
    rows_root_ = prf("vectors/rows-root")
    params = GenerationParams.from_json(MIX)
    choice = []
    for i in range(12):
        s = prf("vectors/env-choice", i)
        u = uniform_below(word_stream(prf("env-choice", s)), 6)
        choice.append({"problem_seed": s.hex(), "u": u, "environment": params.environment_for(s).name})
    return {
        "comment": "docs/protocol.md section 4, on the local drand network; hotkey is //Alice's SS58 address.",
        "netuid": ctx.netuid, "window": ctx.window,
        "window_start_block": window_start_block(ctx.window), "deadline_block": window_deadline_block(ctx.window),
        "block_hash": ctx.block_hash.hex(), "block_time": ctx.block_time,
        "problem_round": problem_round(drand.info, ctx.block_time),
        "problem_randomness": ctx.beacon.randomness.hex(),
        "window_seed": ws.hex(),
        "hotkey": ALICE_SS58,
        "problem_seeds": [s.hex() for s in seeds],
        "sketch_key": sketch_key(ws).hex(),
        "deadline_time": deadline_time,
        "opening_round": o_round,
        "opening_randomness": o_beacon.randomness.hex(),
        "opening_seed": o_seed.hex(),
        "rows_root": rows_root_.hex(),
        "checked_groups": {str(n): groups_to_check(o_seed, ALICE_SS58, rows_root_, n) for n in (1, 3, 4, 12, 256)},
        "environment_choice": {"generation": MIX, "total_weight": 6, "cases": choice},
    }


# ---- section 5 ---------------------------------------------------------------------------------
SAMPLING_KEYS = ["4821253073605318709", "10970024018741066016", "614453834043573446", "9264654535401823898"]


def sampling_vectors() -> dict:
    import torch

    streams = []
    for seed, r, n in ((bytes(32), 0, 3), (b"\xff" * 32, 3, 3), (bytes.fromhex("0123456789abcdef" * 4), 7, 2)):
        keys = noise_keys(seed, r, n)
        streams.append({"problem_seed": seed.hex(), "rollout_index": r,
                        "key_words_hex": prf_bytes(8 * n, "gumbel-key", seed, r).hex(),
                        "keys": [str(int(k)) for k in keys],
                        "uniforms_first_6_of_key_0": _hex_floats(noise_uniforms(int(keys[0]), 6))})
    logits = [2.0, -1.0, 0.5, 0.5, -3.0, 1.25]
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float32) / 0.7, -1).numpy()
    positions = []
    for k in SAMPLING_KEYS:
        g = gumbel_noise(int(k), 6)
        tok = sample_token(lp, g)
        positions.append({"key": k, "uniforms": _hex_floats(noise_uniforms(int(k), 6)), "token": tok,
                          "gap_of_token_plus_1": repr(sampling_gap(lp, g, (tok + 1) % 6))})
    return {
        "comment": "docs/protocol.md section 5 (protocol v3). keys are uint64 in decimal; uniforms are exact "
                   "(float.hex()); gaps are float64 reprs (the logarithms may differ by an ulp between math "
                   "libraries); logprobs = float32 log_softmax(logits / 0.7).",
        "prf_prefix": PRF_PREFIX.decode(),
        "key_streams": streams,
        "sampling": {"logits_float32": logits, "temperature": 0.7, "logprobs_float32_hex": _hex_floats(lp),
                     "positions": positions},
    }


# ---- section 6 ---------------------------------------------------------------------------------
def sketch_vectors_doc() -> dict:
    key = prf("vectors/sketch-key")
    cases = []
    for d in (8, 13):
        vec = sketch_vectors(key, d)
        words = word_stream(prf("vectors/sketch-hidden", d))
        # hidden states: small integers / 16 (exact in float32), 3 positions
        hidden = np.array([[(next(words) % 257 - 128) / 16 for _ in range(d)] for _ in range(3)], dtype=np.float32)
        cases.append({"d": d, "stream_hex": prf_bytes((4 * d + 7) // 8, "sketch-vectors", key, d).hex(),
                      "vectors": ["".join("+" if x > 0 else "-" for x in row) for row in vec],
                      "hidden_float32": [[float(x) for x in row] for row in hidden],
                      "sketch": sketch(hidden, vec).tolist()})
    d = 1100  # a hidden state equal to r_0 has <h/|h|, r_0> = sqrt(d) > 32: q_0 is clamped to 32767
    vec = sketch_vectors(key, d)
    clamp = {"d": d, "hidden": "r_0 (the first sketch vector itself, as float32)",
             "sketch": sketch(vec[:1].astype(np.float32), vec).tolist()[0]}
    return {"comment": "docs/protocol.md section 6. vectors: '+' = +1, '-' = -1, row-major K x d.",
            "sketch_key": key.hex(), "cases": cases, "clamped": clamp}


# ---- section 7 / appendix C ----------------------------------------------------------------------
def model_vectors(lm) -> dict:
    from verification.fingerprint import tensor_leaf
    from verification.model import compute_fingerprint

    state = lm.model.state_dict()
    tensors = []
    for name in sorted(state):
        arr = state[name].detach().to("cpu").float().numpy()
        tensors.append({"name": name, "shape": list(arr.shape),
                        "sha256_le": hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest(),
                        "leaf": tensor_leaf(name, arr).hex(),
                        "first_4_float32_hex": _hex_floats(arr.reshape(-1)[:4])})
    gen_obj = {"eos_ids": sorted(lm.eos_ids), "params": lm.generation.to_json()}
    mix = GenerationParams.from_json(MIX)
    prompt = "Compute 37 + 5. Give the final answer as a number on the last line."
    decode_cases = [[220, 13, 258, 100], [257, 18, 19, 256, 20], [195, 164, 72], [181, 124, 124, 124]]
    return {
        "comment": "docs/protocol.md section 7 and appendix C: the tiny model 'tiny' (seed 0).",
        "seed": 0,
        "vocab_size": lm.vocab_size, "hidden_size": lm.hidden_size,
        "special_tokens": {"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258},
        "eos_ids": sorted(lm.eos_ids),
        "tiny_weights_seed_of_lm_head": int.from_bytes(prf("tiny-weights", 0, "lm_head.weight")[:16], "big"),
        "tensors": tensors,
        "tensors_root": lm.weights_root.hex(),
        "tokenizer_to_str": lm.tokenizer_json,
        "tokenizer_sha256": hashlib.sha256(lm.tokenizer_json.encode()).hexdigest(),
        "chat_template": lm.chat_template,
        "chat_template_sha256": hashlib.sha256(lm.chat_template.encode()).hexdigest(),
        "generation_canonical_json": canonical_json(gen_obj).decode(),
        "generation_sha256": hashlib.sha256(canonical_json(gen_obj)).hexdigest(),
        "fingerprint": lm.fingerprint.hex(),
        "fingerprint_under_mix": {"generation": MIX, "fingerprint": compute_fingerprint(
            lm.weights_root, lm.tokenizer_json, lm.chat_template, lm.eos_ids, mix).hex()},
        "chat_prompt": {"user_text": prompt, "ids": lm.chat_prompt_ids(prompt)},
        "decode_skip_special": [{"ids": ids, "text": lm.tokenizer.decode(ids, skip_special_tokens=True)}
                                for ids in decode_cases],
    }


# ---- section 8 ---------------------------------------------------------------------------------
ADD_PARAMS = [
    BASE_GENERATION["environments"][0]["params"],
    {"min_terms": 2, "max_terms": 4, "min_digits": 3, "max_digits": 5, "format_credit_milli": 100},
]
SAT_PARAMS = [{"min_vars": 3, "max_vars": 5, "clause_ratio_milli": 1600, "k": 3},
              {"min_vars": 1, "max_vars": 2, "clause_ratio_milli": 100, "k": 5}]


def _add_completions(p) -> list[str]:
    s = p.answer["sum"]
    wrong = s + 1
    return [
        f"The answer is {s}.", f"{s}", f"{s:,}", f"**{s}**\n\n", f"({s})", f"{s}.00", f"{s}.5",
        f"{wrong}", f"{wrong} apples", f"{s} apples", f"-{s}", f"x{s}", f"{s}x", f"10-{s}",
        f"{s} or {wrong}", f"{wrong} or {s}", "no number", "", f"{s:,}".replace(",", ", "),
        "".join(chr(0x0660 + int(c)) for c in str(s)), "a" * 4090 + f" {s}", "a" * 4094 + f" {s}",
        f"{s}\u00a0", f"{s}?", f"{wrong}\u00a0", f"{wrong}\u200b", f"\u00e9{s}", f"_{s}", f"a-{s}",
        f"1,{s:04d}", f"{wrong}.", f"{wrong}!)]*",
    ]


def _sat_completions(p) -> list[str]:
    n, clauses = p.answer["n"], p.answer["clauses"]
    good = None
    for bits in range(1 << n):
        if all(any((lit > 0) == bool((bits >> (abs(lit) - 1)) & 1) for lit in c) for c in clauses):
            good = [(bits >> i) & 1 for i in range(n)]
            break
    line = " ".join(f"x{i + 1}={v}" for i, v in enumerate(good))
    flipped = " ".join(f"x{i + 1}={1 - v}" for i, v in enumerate(good))
    return [
        line, line.replace("=", " = "), flipped, flipped + " " + line, line + " " + flipped,
        " ".join(f"x{i + 1}={v}" for i, v in enumerate(good[:-1])), line.replace(" ", ""),
        "x99=1 x0=1 " + line, line.replace("x1=", "x001="), line.replace("x1=", "x0001="),
        line.replace("x1=", "X1="), line.replace("x1=", "\u0445" + "1="),
        line.replace("x1=", "x\u0661="), line.replace("1", "\u0661"), line + "2",
        "a" * 4000 + " " + line, "a" * 4090 + " " + line, "a" * 4000 + line,
    ]


def _arith_completions(p) -> list[str]:
    a = p.answer
    return [f"{a}", f"The answer is {a}.", f"{a} apples and 3", f"{a:,}", f"{a}.5", f"-{a}",
            "1,2,3", f"x{a}", "".join(chr(0x0660 + int(c)) for c in str(a)), "none", f"{a},", ",5"]


RG_PARAMS = {
    "rg_chain_sum": [{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                     {"min_terms": 3, "max_terms": 6, "min_digits": 1, "max_digits": 4}],
    "rg_basic_arithmetic": [{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                            {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 3}],
}


def _library_completions(p) -> list[str]:
    a = p.answer["answer"]
    return [f"{a}", f"The answer is {a}.", f"{a + 1}", f"{a}.0", f"{a}.5", f"{-a}", f"x{a}", f"{a} or {a + 1}",
            p.answer["question"].split(": ")[-1].rstrip(" =").rstrip("."), ""]


def _answer_json(env: str, answer) -> dict:
    if env.startswith("rg_"):
        return {"answer": answer["answer"], "library_seed": answer["library_seed"], "attempt": answer["attempt"],
                "range": list(answer["range"])}
    if env == "add":
        return {"terms": list(answer["terms"]), "sum": answer["sum"], "lo": answer["lo"], "hi": answer["hi"],
                "format_credit": answer["format_credit"]}
    if env == "sat":
        return {"n": answer["n"], "clauses": [list(c) for c in answer["clauses"]]}
    return {"answer": answer}


def environment_vectors() -> dict:
    out = {}
    plans = (("add", ADD_PARAMS, _add_completions), ("sat", SAT_PARAMS, _sat_completions), ("arith", [{}], _arith_completions),
             *((name, params, _library_completions) for name, params in RG_PARAMS.items()))
    for name, param_sets, completions in plans:
        env = environments.get(name)
        cases = []
        for pi, params in enumerate(param_sets):
            for i in range(3):
                seed = prf("vectors/problem", name, pi, i)
                p = env.generate(seed, params)
                texts = completions(p) if i == 0 else completions(p)[:4]
                cases.append({"problem_seed": seed.hex(), "params": params, "prompt": p.prompt,
                              "answer": _answer_json(name, p.answer),
                              "completions": [{"text": t, "reward": env.reward(p, t)} for t in texts]})
        out[name] = cases
    adv_cases = [[0, 0, 0, 0], [1_000_000, 0, 0, 0, 0, 0, 0, 0], [1_000_000, 0], [0, 100_000, 1_000_000, 100_000],
                 [333_333, 1, 999_999, 500_000, 0, 7], [5] * 3, [1_000_000] * 8, [10**12, 0, 0], [0]]
    return {
        "comment": "docs/protocol.md section 8. Each case: the problem of problem_seed under params, its "
                   "prompt, the rule's answer data, and the reward (micro-units) of sample completions.",
        "environments": out,
        "advantages": [{"rewards": r, "advantages": advantages(r)} for r in adv_cases],
        "library": {
            "comment": "docs/protocol.md section 8, library-backed environments: the pinned reasoning-gym release, "
                       "the SHA-256 of its generator files, and the library config each rg_* environment's params map to",
            "reasoning_gym_version": REASONING_GYM_VERSION,
            "file_sha256": dict(library.PINNED_FILES),
            "configs": {name: [environments.get(name).config(params) for params in sets] for name, sets in RG_PARAMS.items()},
        },
    }


# ---- sections 9, 10, 12, 13 ---------------------------------------------------------------------------
def _same_up_to_honest_drift(ours, stored) -> bool:
    from verification.constants import LOGPROB_ABS_TOL, SKETCH_TOL
    from verification.sketch import sketch_distance

    if [(g.index, g.environment, g.prompt.tolist(), len(g.rollouts)) for g in ours] != \
            [(g.index, g.environment, g.prompt.tolist(), len(g.rollouts)) for g in stored]:
        return False
    for g, h in zip(ours, stored):
        for r, s in zip(g.rollouts, h.rollouts):
            if (r.index, r.completion.tolist(), r.reward, r.advantage) != (s.index, s.completion.tolist(), s.reward, s.advantage):
                return False
            if np.abs(r.logprobs.astype(np.float64) - s.logprobs.astype(np.float64)).max(initial=0.0) > LOGPROB_ABS_TOL:
                return False
            if sketch_distance(r.sketches, s.sketches).max(initial=0) > SKETCH_TOL:
                return False
    return True


BUNDLE_GROUPS = 2  # the bundle vector's groups: the base params' 8 would make the file four times larger


def bundle_vectors(lm, previous: dict | None = None) -> dict:
    """lm: the tiny model under the base params; the bundle is made under them with groups = 2."""
    from bittensor.sp_core import Keypair

    from miner.proof import build_groups
    from verification.bundle import Bundle, BeaconModel, Header, decode_bundle, encode_bundle, row_digest, rows_root
    from verification.commitment import bundle_name, encode_commitment
    from verification.constants import PROTOCOL_VERSION
    from verification.scoring import MinerOutcome, verified_root
    from verification.signing import sign, verify
    from verification.verifier import Expectation, Verifier
    from verification.errors import BundleFormatError, SignatureError

    lm = lm.with_generation(lm.generation.with_groups(BUNDLE_GROUPS))
    gen_obj = {"eos_ids": sorted(lm.eos_ids), "params": lm.generation.to_json()}
    ctx = _context()
    drand = LocalDrand()
    keypair = Keypair.create_from_uri(ALICE_URI)
    groups = build_groups(lm, ctx, keypair.ss58_address, list(range(BUNDLE_GROUPS)), batch_size=16)
    if previous is not None:
        # logprobs and sketches are the model's floating-point outputs: another honest machine (another
        # CPU's vector units, another BLAS) reproduces them within the protocol's tolerances, not bit for
        # bit. The stored groups stay the vector where this machine's agree with them exactly in tokens,
        # rewards and advantages and within LOGPROB_ABS_TOL and SKETCH_TOL in the rest; everything derived
        # from them (digests, roots, signature, file bytes, verdicts) is then compared byte for byte.
        try:
            stored = decode_bundle(base64.b64decode(previous["file_base64"])).groups
        except BundleFormatError:  # a vector of another protocol version: nothing to keep
            stored = None
        if stored is not None and _same_up_to_honest_drift(groups, stored):
            groups = stored
    header = Header(protocol_version=PROTOCOL_VERSION, netuid=ctx.netuid, window=ctx.window,
                    block_hash=ctx.block_hash.hex(), block_time=ctx.block_time, hotkey=keypair.ss58_address,
                    beacon=BeaconModel.from_beacon(ctx.beacon), model_fingerprint=lm.fingerprint.hex(),
                    group_size=lm.generation.group_size, max_new_tokens=lm.generation.max_new_tokens,
                    n_groups=len(groups), rows_root=rows_root(groups).hex())
    message = header.signing_message()
    signature = None
    if previous is not None:
        stored = bytes.fromhex(previous["signature"])
        try:
            verify(keypair.ss58_address, message, stored)
            signature = stored
        except SignatureError:
            signature = None
    if signature is None:
        signature = sign(keypair, message)
    bundle = Bundle(header=header, signature=signature, groups=groups)
    data = encode_bundle(bundle)
    assert decode_bundle(data).header == header
    verifier = Verifier(lm, [drand.info])
    expected = Expectation(netuid=ctx.netuid, window=ctx.window, hotkey=keypair.ss58_address,
                           block_hash=ctx.block_hash, block_time=ctx.block_time, fingerprint=lm.fingerprint)
    full = verifier.verify_bytes(data, expected)
    deadline_time = ctx.block_time + 240
    o_round = opening_round(drand.info, deadline_time)
    o_seed = opening_seed(ctx.netuid, ctx.window, drand.sign(o_round).randomness)
    checked = groups_to_check(o_seed, keypair.ss58_address, bytes.fromhex(header.rows_root), header.n_groups, 1)
    opened = verifier.verify_bytes(data, expected, groups=checked)
    by_row = {(v.group, v.rollout): v for v in opened.rollouts}
    verified = [row_digest(g.index, g.environment, g.prompt, r) for g, r in bundle.rows() if by_row[(g.index, r.index)].ok]
    uid = 5
    bundle_sha = hashlib.sha256(data).digest()
    location = "https://example.org/rp/" + bundle_name(ctx.window, bundle_sha)
    group_docs = []
    for g in groups:
        env = environments.get(g.environment)
        rows = []
        for r in g.rollouts:
            rows.append({"index": r.index, "completion_ids": r.completion.tolist(),
                         "text": lm.tokenizer.decode(r.completion.tolist(), skip_special_tokens=True),
                         "reward": r.reward, "advantage": r.advantage,
                         "row_digest": row_digest(g.index, g.environment, g.prompt, r).hex()})
        _, problem = environments.problem_for(ctx.problem_seed(keypair.ss58_address, g.index), lm.generation)
        assert env.name == problem.environment
        group_docs.append({"index": g.index, "environment": g.environment, "prompt_text": problem.prompt,
                           "prompt_ids": g.prompt.tolist(), "rollouts": rows})
    return {
        "comment": "docs/protocol.md sections 9, 10, 12 and 13: a bundle of the tiny model (appendix C) for "
                   "the window of challenge.json, signed by //Alice, under the base generation params with "
                   "groups = 2 (section 15: model_fingerprint is section 7's with generation_canonical_json). "
                   "The signature is randomized (sr25519): scripts/make_vectors.py keeps this one while it verifies.",
        "model": "tiny", "generation_canonical_json": canonical_json(gen_obj).decode(),
        "model_fingerprint": lm.fingerprint.hex(),
        "hotkey": keypair.ss58_address, "hotkey_public_key": bytes(keypair.public_key).hex(), "hotkey_uri": ALICE_URI,
        "header": header.model_dump(),
        "header_canonical_json": header.canonical_bytes().decode(),
        "signing_message": message.hex(),
        "signature": signature.hex(),
        "groups": group_docs,
        "rows_root": header.rows_root,
        "file_base64": base64.b64encode(data).decode(),
        "file_sha256": bundle_sha.hex(),
        "file_bytes": len(data),
        "verdict_all_groups_opened": {"ok": full.ok, "reason": full.reason, "checked_groups": full.checked_groups,
                                      "rollout_reasons": [[v.group, v.rollout, v.reason] for v in full.rollouts]},
        "opening": {"opening_round": o_round, "opening_seed": o_seed.hex(), "groups_checked_per_miner": 1,
                    "checked_groups": checked, "ok": opened.ok, "reason": opened.reason,
                    "rollout_reasons": [[v.group, v.rollout, v.reason] for v in opened.rollouts]},
        "verified_root": {"uid": uid, "verified_row_digests": [d.hex() for d in verified],
                          "root": verified_root([MinerOutcome(uid, keypair.ss58_address, True, "ok",
                                                              verified_rows=verified)]).hex()},
        "commitment": {"window": ctx.window, "location": location, "committed_base": "https://example.org/rp/",
                       "hex": encode_commitment(ctx.window, bundle_sha, location).hex()},
    }


# ---- section 15: a checkpoint of the tiny model --------------------------------------------------------
TRAINER_URI = "//Bob"
LORA_MODULES = ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj")
LORA_ADAPTER = {"kind": "lora", "rank": 3, "alpha": 7, "target_modules": ["q_proj", "up_proj"]}
CHECKPOINT_NETUID, CHECKPOINT_FROM_WINDOW = 3, 9


def lora_vector_tensor(name: str, shape: tuple[int, int]) -> np.ndarray:
    """The vector adapter's tensor `name`: value i (C order) = ((w_i >> 40) - 2^23) / 2^27 in float32
    (exact: a 24-bit integer over a power of two, in (-1/16, 1/16)) for the word stream w of
    PRF("vectors/lora", name:string)."""
    words = word_stream(prf("vectors/lora", name))
    n = shape[0] * shape[1]
    return np.array([((next(words) >> 40) - (1 << 23)) / (1 << 27) for _ in range(n)], dtype=np.float32).reshape(shape)


def lora_vector_tensors(lm) -> dict[str, np.ndarray]:
    modules = dict(lm.model.named_modules())
    rank, out = LORA_ADAPTER["rank"], {}
    for path in LORA_MODULES:
        out_f, in_f = modules[path].weight.shape
        out[f"{path}.lora_A.weight"] = lora_vector_tensor(f"{path}.lora_A.weight", (rank, int(in_f)))
        out[f"{path}.lora_B.weight"] = lora_vector_tensor(f"{path}.lora_B.weight", (int(out_f), rank))
    return out


def _adapter_file(arrays: dict[str, np.ndarray], previous: dict | None) -> bytes:
    """The trainer's adapter file of `arrays` (trainer/adapter_files.py). The stored file stays the
    vector while it holds exactly these tensors and config: safetensors writes the bytes, and another
    release of it could lay out the same tensors otherwise."""
    import torch

    from trainer.adapter_files import adapter_from_bytes, adapter_to_bytes

    config = {"rank": LORA_ADAPTER["rank"], "alpha": float(LORA_ADAPTER["alpha"]),
              "target_modules": list(LORA_ADAPTER["target_modules"])}
    fresh = adapter_to_bytes({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, config)
    if previous is None:
        return fresh
    stored = base64.b64decode(previous["adapter_file_base64"])
    try:
        tensors, stored_config = adapter_from_bytes(stored)
    except ValueError:
        return fresh
    _, fresh_config = adapter_from_bytes(fresh)
    same = (stored_config == fresh_config and set(tensors) == set(arrays)
            and all(np.array_equal(tensors[k].numpy(), arrays[k]) for k in arrays))
    return stored if same else fresh


def _kept_signature(ss58: str, message: bytes, previous: dict | None, keypair) -> bytes:
    """sr25519 signatures are randomized: keep the stored one while it verifies for `message`."""
    from verification.errors import SignatureError
    from verification.signing import sign, verify

    if previous is not None:
        stored = bytes.fromhex(previous["signature"])
        try:
            verify(ss58, message, stored)
            return stored
        except SignatureError:
            pass
    return sign(keypair, message)


def checkpoint_vectors(lm, previous: dict | None = None) -> dict:
    from dataclasses import replace

    import torch
    from bittensor.sp_core import Keypair

    from verification.checkpoint import Manifest, ManifestFile, lora_weights_root, parse_manifest
    from verification.checkpoint_model import ADAPTER_FILE, load_checkpoint, lora_delta
    from verification.constants import PROTOCOL_VERSION
    from verification.fingerprint import tensor_leaf, tensors_root
    from verification.model import compute_fingerprint

    keypair = Keypair.create_from_uri(TRAINER_URI)
    arrays = lora_vector_tensors(lm)
    data = _adapter_file(arrays, previous)
    adapter_root = tensors_root(arrays.items())
    root = lora_weights_root(lm.weights_root, adapter_root, LORA_ADAPTER)
    params = GenerationParams.from_json(MIX)
    fp = compute_fingerprint(root, lm.tokenizer_json, lm.chat_template, lm.eos_ids, params)
    unsigned = Manifest(
        protocol_version=PROTOCOL_VERSION, netuid=CHECKPOINT_NETUID, version=1, from_window=CHECKPOINT_FROM_WINDOW,
        base_fingerprint=lm.fingerprint.hex(), parent_fingerprint=lm.fingerprint.hex(), fingerprint=fp.hex(),
        weights_root=root.hex(), adapter=dict(LORA_ADAPTER),
        files=(ManifestFile(ADAPTER_FILE, hashlib.sha256(data).hexdigest(), len(data)),),
        generation=params, trainer_hotkey=keypair.ss58_address)
    message = unsigned.signing_message()
    signature = _kept_signature(keypair.ss58_address, message, previous, keypair)
    manifest = replace(unsigned, signature=signature.hex())
    manifest_bytes = manifest.to_bytes()
    assert parse_manifest(manifest_bytes) == manifest
    model = load_checkpoint(lm, manifest, {ADAPTER_FILE: data})  # every check a node runs, and the merge
    assert model.fingerprint == fp
    merged_state = model.model.state_dict()
    scale = LORA_ADAPTER["alpha"] / LORA_ADAPTER["rank"]
    merged = []
    for path in LORA_MODULES:
        delta = lora_delta(torch.from_numpy(arrays[f"{path}.lora_A.weight"]),
                           torch.from_numpy(arrays[f"{path}.lora_B.weight"]), scale).numpy()
        w = merged_state[f"{path}.weight"].detach().to("cpu").numpy()
        merged.append({"module": path, "shape": list(w.shape),
                       "delta_sha256_le": hashlib.sha256(np.ascontiguousarray(delta, dtype="<f4").tobytes()).hexdigest(),
                       "merged_sha256_le": hashlib.sha256(np.ascontiguousarray(w, dtype="<f4").tobytes()).hexdigest(),
                       "merged_first_4_float32_hex": _hex_floats(w.reshape(-1)[:4])})
    return {
        "comment": "docs/protocol.md section 15: version 1 of a LoRA checkpoint on the tiny model (appendix C), "
                   "signed by //Bob. Adapter tensor values: see lora_vector_tensor in scripts/make_vectors.py "
                   "(value i = ((w_i >> 40) - 2^23) / 2^27 for the word stream of PRF(\"vectors/lora\", name)). "
                   "The signature is randomized (sr25519): scripts/make_vectors.py keeps this one while it verifies.",
        "model": "tiny",
        "base_weights_root": lm.weights_root.hex(),
        "base_fingerprint": lm.fingerprint.hex(),
        "adapter": LORA_ADAPTER,
        "adapter_canonical_json": canonical_json(LORA_ADAPTER).decode(),
        "tensors": [{"name": name, "shape": list(arr.shape),
                     "sha256_le": hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest(),
                     "leaf": tensor_leaf(name, arr).hex(), "first_4_float32_hex": _hex_floats(arr.reshape(-1)[:4])}
                    for name, arr in sorted(arrays.items())],
        "adapter_tensors_root": adapter_root.hex(),
        "weights_root": root.hex(),
        "generation": MIX,
        "generation_canonical_json": canonical_json({"eos_ids": sorted(lm.eos_ids), "params": params.to_json()}).decode(),
        "fingerprint": fp.hex(),
        "adapter_file_name": ADAPTER_FILE,
        "adapter_file_base64": base64.b64encode(data).decode(),
        "adapter_file_sha256": hashlib.sha256(data).hexdigest(),
        "adapter_file_bytes": len(data),
        "trainer_uri": TRAINER_URI,
        "trainer_hotkey": keypair.ss58_address,
        "trainer_public_key": bytes(keypair.public_key).hex(),
        "manifest_body_canonical_json": canonical_json(unsigned.body()).decode(),
        "signing_message": message.hex(),
        "signature": signature.hex(),
        "manifest": manifest_bytes.decode(),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "manifest_bytes": len(manifest_bytes),
        "merged": {"scale_float32_hex": float(np.float32(scale)).hex(), "modules": merged},
    }


# ---- sections 12, 15: announcement commitments ---------------------------------------------------------
def announcement_vectors(checkpoint: dict) -> dict:
    """rc3 announcements of the checkpoint of checkpoint.json, in both location forms."""
    from verification.announcement import (
        ANNOUNCEMENT_HEAD_BYTES, MAX_ANNOUNCEMENT_BASE_BYTES, checkpoint_manifest_name, decode_announcement, encode_announcement,
    )
    from verification.errors import CheckpointError

    netuid, from_window = CHECKPOINT_NETUID, CHECKPOINT_FROM_WINDOW
    fp, mh = bytes.fromhex(checkpoint["fingerprint"]), bytes.fromhex(checkpoint["manifest_sha256"])
    name = checkpoint_manifest_name(netuid, fp)
    longest_base = "https://example.org/" + "c" * (MAX_ANNOUNCEMENT_BASE_BYTES - len("https://example.org/") - 1) + "/"
    cases = []
    for form, location in (
        ("base", "https://example.org/rp/" + name),
        ("base", longest_base + name),
        ("base", "file:///srv/ckpt/" + name),
        ("full", "https://example.org/checkpoints/v1.json"),
        ("full", "s3://bucket/rp/manifest.json"),
    ):
        data = encode_announcement(netuid, from_window, fp, mh, location)
        decoded = decode_announcement(netuid, data)
        assert decoded.location == location and decoded.fingerprint == fp and decoded.manifest_hash == mh
        committed = data[ANNOUNCEMENT_HEAD_BYTES:].decode()
        assert committed.endswith("/") == (form == "base")
        cases.append({"form": form, "manifest_location": location, "committed_location": committed,
                      "hex": data.hex(), "bytes": len(data)})
    from verification.constants import ANNOUNCEMENT_MAGIC, COMMITMENT_MAGIC

    head = ANNOUNCEMENT_MAGIC + from_window.to_bytes(8, "big") + fp + mh
    assert len(head) == ANNOUNCEMENT_HEAD_BYTES
    refused = []
    for why, data in (
        ("no location", head),
        ("a bundle commitment's magic", COMMITMENT_MAGIC + head[len(ANNOUNCEMENT_MAGIC):] + b"https://example.org/rp/"),
        ("location over MAX_ANNOUNCEMENT_BASE_BYTES", head + longest_base[:-1].encode() + b"c/"),
        ("location not UTF-8", head + b"https://example.org/\xff/"),
        ("whitespace in the location", head + b"https://example.org/a b/"),
        ("unknown scheme", head + b"ftp://example.org/rp/"),
    ):
        try:
            decode_announcement(netuid, data)
        except CheckpointError:
            refused.append({"why": why, "hex": data.hex()})
        else:
            raise AssertionError(f"an announcement with {why} decoded")
    return {
        "comment": "docs/protocol.md sections 12 and 15: rc3 announcements (subtensor commitments of the announcer) "
                   "of the checkpoint of checkpoint.json, with the location given to the encoder, the location "
                   "committed (a base ending in '/', completed by manifest_name, or a full URI) and the bytes; "
                   "then byte strings every reader refuses.",
        "netuid": netuid, "from_window": from_window,
        "fingerprint": fp.hex(), "manifest_sha256": mh.hex(),
        "manifest_name": name,
        "cases": cases,
        "refused": refused,
    }


# ---- section 16: a training record ---------------------------------------------------------------------
TRAINING_VALIDATOR_URI = "//Charlie"
TRAINING_VALIDATOR_UID = 0
TRAINING_STEP_COUNT = 1.0  # AdamW's step count of the vector's optimizer state (one step since the return)


def _training_vector_tensor(domain: str, name: str, shape: tuple[int, ...], signed: bool) -> np.ndarray:
    """value i (C order) = ((w_i >> 40) - 2^23) / 2^27 (signed) or (w_i >> 40) / 2^40 (not negative),
    in float32 and exact, for the word stream w of PRF(domain, name:string)."""
    words = word_stream(prf(domain, name))
    n = int(np.prod(shape))
    if signed:
        values = [((next(words) >> 40) - (1 << 23)) / (1 << 27) for _ in range(n)]
    else:
        values = [(next(words) >> 40) / (1 << 40) for _ in range(n)]
    return np.array(values, dtype=np.float32).reshape(shape)


def training_start_tensors(lm) -> dict[str, np.ndarray]:
    """The start adapter of the vector record (start.safetensors of a version whose parent is the
    base model): checkpoint.json's lora_A tensors and every lora_B zero, i.e. exactly the base model."""
    arrays = lora_vector_tensors(lm)
    return {k: (np.zeros_like(v) if k.endswith("lora_B.weight") else v) for k, v in arrays.items()}


def training_optimizer_tensors(lm) -> dict[str, np.ndarray]:
    """A fixed AdamW state over checkpoint.json's adapter tensors: "<name>.exp_avg" signed values of
    PRF("vectors/adam-m", name), "<name>.exp_avg_sq" non-negative values of PRF("vectors/adam-v", name),
    "<name>.step" [TRAINING_STEP_COUNT]."""
    out = {}
    for name, arr in lora_vector_tensors(lm).items():
        out[f"{name}.exp_avg"] = _training_vector_tensor("vectors/adam-m", name, arr.shape, signed=True)
        out[f"{name}.exp_avg_sq"] = _training_vector_tensor("vectors/adam-v", name, arr.shape, signed=False)
        out[f"{name}.step"] = np.array([TRAINING_STEP_COUNT], dtype=np.float32)
    return dict(sorted(out.items()))


def _heldout_rewards(full: tuple[int, ...], half: tuple[int, ...] = (), n: int = 96) -> tuple[int, ...]:
    """n per-rollout rewards (micro-units): 1000000 at the indices in full, 500000 at those in half, else 0."""
    return tuple(1_000_000 if i in full else 500_000 if i in half else 0 for i in range(n))


def _tensor_rows(arrays: dict[str, np.ndarray], first_4: bool = True) -> list[dict]:
    rows = []
    for name, arr in sorted(arrays.items()):
        row = {"name": name, "shape": list(arr.shape),
               "sha256_le": hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest()}
        if first_4:
            row["first_4_float32_hex"] = _hex_floats(arr.reshape(-1)[:4])
        rows.append(row)
    return rows


def _refused_records(minimal: bytes) -> list[dict]:
    """Byte strings parse_training_record refuses: `minimal` (a record that parses) with the first
    and only occurrence of `old` replaced by `new`, each with (a part of) the parser's message."""
    from verification.errors import TrainingRecordError
    from verification.training_record import parse_training_record

    text = minimal.decode()
    lo = text.index('"start":{"adapter_sha256":"') + len('"start":{"adapter_sha256":"')
    start_adapter = text[lo:lo + 64]
    lo = text.index('"end":{"adapter_sha256":"') + len('"end":{"adapter_sha256":"')
    end_adapter = text[lo:lo + 64]
    cases = [
        ("not in canonical form (a space after a separator)", "not in canonical form", '{"end":', '{ "end":'),
        ("another format", "format must be", '"format":"rollproof-training/1"', '"format":"rollproof-training/0"'),
        ("a float written as a JSON number, not a float.hex() string", "is not a float.hex() string",
         '"grad_norm":"0x1.0000000000000p-1"', '"grad_norm":0.5'),
        ("rows listed for a window where no step ran", "a step is stated exactly when one ran",
         '"outcome":"applied"', '"outcome":"no_step"'),
        ("a parent manifest for a record whose parent is the base model (version 0)", "only a record whose parent",
         '"manifest_sha256":null', '"manifest_sha256":"' + end_adapter + '"'),
        ("an event of unknown kind", "unknown event kind", '"events":[', '"events":[{"kind":"rollback"},'),
        ("window events that do not span first..last", "the window events span exactly first..last",
         '"last":7', '"last":8'),
        ("held-out rewards of parent and candidate that do not pair up", "pair up",
         '"candidate":[1000000,1000000]', '"candidate":[1000000]'),
        ("the last event is not this checkpoint announced", "the last event is this checkpoint, announced",
         '"stage":"announced"', '"stage":"expired"'),
        ("the end adapter is not the announced candidate's", "the announced candidate's adapter is the record's end",
         '"end":{"adapter_sha256":"' + end_adapter, '"end":{"adapter_sha256":"' + start_adapter),
    ]
    out = []
    for why, message, old, new in cases:
        assert text.count(old) == 1, f"{why}: {old!r} occurs {text.count(old)} times"
        data = text.replace(old, new).encode()
        try:
            parse_training_record(data)
        except TrainingRecordError as exc:
            assert message in str(exc), f"{why}: refused for another reason: {exc}"
            out.append({"why": why, "error": message, "old": old, "new": new, "sha256": hashlib.sha256(data).hexdigest()})
        else:
            raise AssertionError(f"a training record with {why} parsed")
    return out


def training_vectors(lm, bundle: dict, checkpoint: dict) -> dict:
    """A training record (section 16) assembled from fixed values: every kind of event, the default
    trainer settings, the row leaves of bundle.json's verified rows, and the start adapter and
    optimizer files of a fixed state on checkpoint.json's adapter tensors."""
    import torch
    from bittensor.sp_core import Keypair

    from trainer.adapter_files import adapter_to_bytes
    from trainer.optimizer_files import (
        METADATA_KEY, OPTIMIZER_FORMAT, load_optimizer_state, optimizer_from_bytes, optimizer_to_bytes,
    )
    from trainer.policy import LoraSettings, make_policy
    from trainer.record import TRAINER_SETTINGS, settings_from_json, settings_json, step_json
    from trainer.service import TrainerConfig
    from trainer.heldout import gate_withholds
    from trainer.step import StepResult, make_optimizer
    from verification.training_record import (
        OPTIMIZER_FILE, RECORD_FORMAT, START_FILE, CandidateEvent, ReturnToAnchor, TrainingRecord, WindowEvent,
        parse_training_record,
    )

    config = TrainerConfig()
    settings = settings_json(config.lora, config.train, {k: getattr(config, k) for k in TRAINER_SETTINGS})
    replay_settings = settings_from_json(settings)
    assert settings_json(replay_settings.lora, replay_settings.train,
                         {k: getattr(replay_settings, k) for k in TRAINER_SETTINGS}) == settings

    # the start adapter and the optimizer state, on checkpoint.json's LoRA (rank 3, alpha 7, two modules)
    lora = LoraSettings(rank=LORA_ADAPTER["rank"], alpha=float(LORA_ADAPTER["alpha"]),
                        target_modules=tuple(LORA_ADAPTER["target_modules"]))
    start = training_start_tensors(lm)
    start_file = adapter_to_bytes({k: torch.from_numpy(v.copy()) for k, v in start.items()}, lora.to_dict())
    moments = training_optimizer_tensors(lm)
    optimizer_file = optimizer_to_bytes({k: torch.from_numpy(v.copy()) for k, v in moments.items()})
    policy = make_policy(lm, lora)  # the file's names and shapes are a real policy's
    load_optimizer_state(policy, make_optimizer(policy), optimizer_from_bytes(optimizer_file))

    # the rows: bundle.json's verified rows, as leaves PRF("verified", uid, row digest)
    uid = bundle["verified_root"]["uid"]
    digests = bundle["verified_root"]["verified_row_digests"]
    leaves = [prf("verified", uid, bytes.fromhex(d)).hex() for d in digests]
    assert merkle_root([bytes.fromhex(x) for x in leaves]).hex() == bundle["verified_root"]["root"]

    def step(grad_norm: float, clipped_share: float, loss: float, reason: str = "applied") -> dict:
        return step_json(StepResult(reason == "applied", reason, grad_norm, clipped_share, 0.0, loss, 1, 1))

    params = lm.generation
    parent_rewards = _heldout_rewards(full=tuple(range(0, 96, 8)), half=(3, 50))
    worse = _heldout_rewards(full=tuple(range(0, 48, 8)), half=(3,))
    better = _heldout_rewards(full=tuple(range(0, 96, 8)) + (5, 61), half=(3, 50, 90))
    assert gate_withholds(list(parent_rewards), list(worse), config.heldout_rollouts, config.gate_margin)
    assert not gate_withholds(list(parent_rewards), list(better), config.heldout_rollouts, config.gate_margin)
    report = {w: prf("vectors/report", w).hex() for w in (6, 7, 8, 9)}  # stand-ins for SHA-256(report bytes)
    other_bundle = prf("vectors/bundle", 6).hex()  # a stand-in bundle hash
    end_adapter = checkpoint["adapter_file_sha256"]
    events = (
        WindowEvent(5, None, {}, "not_trained", f"no ledger entry of validator uid {TRAINING_VALIDATOR_UID} for window 5",
                    (), 0, None),
        WindowEvent(6, report[6], {uid: other_bundle}, "no_step", "no row with a non-zero advantage", (), 0, None),
        WindowEvent(7, report[7], {uid: bundle["file_sha256"]}, "applied", "applied", tuple(leaves), 0,
                    step(0.75, 0.0, -0.1)),
        CandidateEvent(1, "withheld", params, parent_rewards, worse, prf("vectors/candidate", 1).hex()),
        ReturnToAnchor(),
        WindowEvent(8, report[8], {uid: bundle["file_sha256"]}, "skipped", "clipped_share", tuple(leaves[:4]), 0,
                    step(3.5, 0.625, 0.25, "clipped_share")),
        WindowEvent(9, report[9], {uid: bundle["file_sha256"]}, "applied", "applied", tuple(leaves[4:]), 2,
                    step(0.1, 1 / 3, -2.5e-3)),
        # the gate also measured greedy decoding (the optional "greedy" key): 8 stand-in problems, the
        # candidate right on 5 against the parent's 3
        CandidateEvent(2, "announced", params, parent_rewards, better, end_adapter, (1, 0, 0, 1, 0, 0, 0, 1),
                       (1, 1, 0, 1, 0, 0, 1, 1)),
    )
    validator = Keypair.create_from_uri(TRAINING_VALIDATOR_URI).ss58_address
    base_fp = lm.fingerprint.hex()
    record = TrainingRecord(
        netuid=CHECKPOINT_NETUID, version=2, parent_fingerprint=base_fp, parent_version=0, parent_manifest_sha256=None,
        start_adapter_sha256=hashlib.sha256(start_file).hexdigest(), start_optimizer_sha256=None,
        validator_uid=TRAINING_VALIDATOR_UID, validator_hotkey=validator, first_window=5, last_window=9,
        lineage=((base_fp, 0),), settings=settings, world_size=1, events=events,
        end_adapter_sha256=end_adapter, end_optimizer_sha256=hashlib.sha256(optimizer_file).hexdigest())
    data = record.to_bytes()
    assert parse_training_record(data) == record
    assert set(record.data_hashes()) == {report[6], report[7], report[8], report[9], other_bundle, bundle["file_sha256"]}

    minimal = TrainingRecord(
        netuid=CHECKPOINT_NETUID, version=1, parent_fingerprint=base_fp, parent_version=0, parent_manifest_sha256=None,
        start_adapter_sha256=record.start_adapter_sha256, start_optimizer_sha256=None,
        validator_uid=TRAINING_VALIDATOR_UID, validator_hotkey=validator, first_window=7, last_window=7,
        lineage=((base_fp, 0),), settings={"lora": {}, "train": {}, "trainer": {}}, world_size=1,
        events=(WindowEvent(7, report[7], {uid: bundle["file_sha256"]}, "applied", "applied", (leaves[0],), 0,
                            step(0.5, 0.0, 0.0)),
                CandidateEvent(1, "announced", params, (0, 1_000_000), (1_000_000, 1_000_000), end_adapter)),
        end_adapter_sha256=end_adapter, end_optimizer_sha256=record.end_optimizer_sha256)
    assert parse_training_record(minimal.to_bytes()) == minimal
    return {
        "comment": "docs/protocol.md section 16: a training record (training.json) assembled from fixed values, not "
                   "the outcome of a run (it does not replay: its reports are stand-ins). Version 2 on the tiny base "
                   "model: window 5 without a report, window 6 without a trainable row, a step on bundle.json's "
                   "verified rows, a withheld candidate v1 and the return to the start state, a step skipped by the "
                   "clipped-share breaker, a step, and the announced candidate v2 whose adapter is checkpoint.json's "
                   "file, with the gate's greedy results. Stand-ins: report_sha256 of window w = PRF(\"vectors/report\", w:int), the bundle of window "
                   "6 PRF(\"vectors/bundle\", 6:int), the withheld candidate's adapter PRF(\"vectors/candidate\", 1:int).",
        "record_format": RECORD_FORMAT,
        "base_fingerprint": base_fp,
        "settings_default_canonical_json": canonical_json(settings).decode(),
        "validator_uri": TRAINING_VALIDATOR_URI,
        "row_leaves": {"uid": uid, "leaves": leaves},
        "start_adapter": {
            "file_name": START_FILE, "config": lora.to_dict(), "tensors": _tensor_rows(start, first_4=False),
            "file_sha256": hashlib.sha256(start_file).hexdigest(), "file_bytes": len(start_file)},
        "optimizer": {
            "file_name": OPTIMIZER_FILE, "metadata": {METADATA_KEY: canonical_json({"format": OPTIMIZER_FORMAT}).decode()},
            "tensors": _tensor_rows(moments, first_4=False), "file_sha256": hashlib.sha256(optimizer_file).hexdigest(),
            "file_bytes": len(optimizer_file)},
        "record_canonical_json": data.decode(),
        "record_sha256": hashlib.sha256(data).hexdigest(),
        "record_bytes": len(data),
        "minimal_canonical_json": minimal.to_bytes().decode(),
        "refused": _refused_records(minimal.to_bytes()),
    }


# ---- files -------------------------------------------------------------------------------------------
def load_tiny():
    from verification.model import load_model

    return load_model("tiny")


def build_all(lm=None, stored: dict[str, dict] | None = None) -> dict[str, dict]:
    stored = stored or {}
    lm = lm or load_tiny()
    docs = {
        "prf.json": prf_vectors(),
        "drand.json": drand_vectors(),
        "challenge.json": challenge_vectors(),
        "sampling.json": sampling_vectors(),
        "sketch.json": sketch_vectors_doc(),
        "model.json": model_vectors(lm),
        "environments.json": environment_vectors(),
        "bundle.json": bundle_vectors(lm, stored.get("bundle.json")),
    }
    docs["checkpoint.json"] = checkpoint_vectors(lm, stored.get("checkpoint.json"))
    docs["announcement.json"] = announcement_vectors(docs["checkpoint.json"])
    docs["training.json"] = training_vectors(lm, docs["bundle.json"], docs["checkpoint.json"])
    return docs


def dump(doc: dict) -> str:
    return json.dumps(doc, indent=1) + "\n"


def read_stored() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in VECTORS.glob("*.json")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored files instead of writing")
    args = ap.parse_args()
    docs = build_all(stored=read_stored())
    bad = 0
    for name, doc in docs.items():
        path = VECTORS / name
        text = dump(doc)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path.relative_to(ROOT)} differs from what the code gives")
                bad += 1
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)} ({len(text.encode())} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
