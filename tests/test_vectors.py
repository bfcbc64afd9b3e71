"""Known-answer vectors (tests/vectors/*.json, written by scripts/make_vectors.py): the protocol's
numbers pinned, so an independent implementation of docs/protocol.md can check itself against them
and a change to the reference that moves any of them fails here.

Two kinds of test: the reference code reproduces every stored file exactly (test_*_file), and parts
of each file re-derived here in plain Python from the document's definitions (test_*_by_definition),
so a vector cannot merely restate whatever the code happens to do."""

import base64
import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from verification import tensor_ops
from verification.constants import PRF_PREFIX
from verification.prf import prf_bytes
from verification.sampling import GAMMA, MIX1, MIX2, gumbel_noise, noise_keys, noise_uniforms, sample_token, sampling_gap

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
M64 = (1 << 64) - 1

_spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_vectors.py")
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def _same_file(name: str, doc: dict) -> None:
    assert make_vectors.dump(doc) == (VECTORS / name).read_text(), (
        f"{name} differs from what the code gives: run scripts/make_vectors.py and review the diff")


# ---- the code reproduces every stored file ---------------------------------------------------------
@pytest.mark.parametrize("name, build", [
    ("prf.json", make_vectors.prf_vectors),
    ("drand.json", make_vectors.drand_vectors),
    ("challenge.json", make_vectors.challenge_vectors),
    ("sampling.json", make_vectors.sampling_vectors),
    ("sketch.json", make_vectors.sketch_vectors_doc),
    ("environments.json", make_vectors.environment_vectors),
    ("announcement.json", lambda: make_vectors.announcement_vectors(_load("checkpoint.json"))),
])
def test_pure_vector_files(name, build):
    _same_file(name, build())


def test_model_file(tiny_base):
    _same_file("model.json", make_vectors.model_vectors(tiny_base))


def test_bundle_file(tiny_base):
    _same_file("bundle.json", make_vectors.bundle_vectors(tiny_base, _load("bundle.json")))


def test_checkpoint_file(tiny_base):
    _same_file("checkpoint.json", make_vectors.checkpoint_vectors(tiny_base, _load("checkpoint.json")))


def test_training_file(tiny_base):
    _same_file("training.json", make_vectors.training_vectors(tiny_base, _load("bundle.json"), _load("checkpoint.json")))


def test_vector_files_stay_small():
    total = sum(p.stat().st_size for p in VECTORS.glob("*.json"))
    assert total < 200_000, f"tests/vectors holds {total} bytes"


# ---- section 2, by definition ------------------------------------------------------------------------
def _enc(part: dict) -> bytes:
    if "bytes" in part:
        raw, tag = bytes.fromhex(part["bytes"]), b"b"
    elif "str" in part:
        raw, tag = part["str"].encode("utf-8"), b"s"
    else:
        raw, tag = int(part["int"]).to_bytes(8, "big"), b"i"
    return tag + len(raw).to_bytes(4, "big") + raw


def _prf(domain: str, *parts: bytes) -> bytes:
    """PRF over already-typed raw parts given as (tag, bytes) pairs or ints/strs/bytes."""
    out = PRF_PREFIX + domain.encode("ascii") + b"\x00"
    for p in parts:
        if isinstance(p, bytes):
            out += b"b" + len(p).to_bytes(4, "big") + p
        elif isinstance(p, str):
            out += b"s" + len(p.encode()).to_bytes(4, "big") + p.encode()
        else:
            out += b"i" + (8).to_bytes(4, "big") + p.to_bytes(8, "big")
    return hashlib.sha256(out).digest()


def _words(key: bytes):
    j = 0
    while True:
        d = hashlib.sha256(key + j.to_bytes(8, "big")).digest()
        for i in range(4):
            yield int.from_bytes(d[8 * i:8 * i + 8], "big")
        j += 1


def _uniform_below(words, n: int) -> int:
    limit = (2**64 // n) * n
    while True:
        x = next(words)
        if x < limit:
            return x % n


def _merkle(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _prf("merkle-empty")
    level = [_prf("merkle-leaf", x) for x in leaves]
    while len(level) > 1:
        nxt = [_prf("merkle-node", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def test_prf_by_definition():
    doc = _load("prf.json")
    assert doc["prf_prefix"].encode() == PRF_PREFIX
    for case in doc["frames"]:
        frame = PRF_PREFIX + case["domain"].encode("ascii") + b"\x00" + b"".join(_enc(p) for p in case["parts"])
        assert frame.hex() == case["frame_hex"]
        assert hashlib.sha256(frame).hexdigest() == case["prf_hex"]
        assert hashlib.shake_256(frame).hexdigest(40) == case["prf_bytes_40_hex"]
    ws = doc["word_stream"]
    words = _words(bytes.fromhex(ws["key"]))
    assert [str(next(words)) for _ in range(8)] == ws["first_8_words"]
    words = _words(bytes.fromhex(doc["uniform_below"]["key"]))
    for draw in doc["uniform_below"]["draws"]:
        assert str(_uniform_below(words, int(draw["n"]))) == draw["value"]
    assert any(d["words_consumed"] > 1 for d in doc["uniform_below"]["draws"]), "no rejection exercised"
    for case in doc["sample_distinct"]:
        words, chosen = _words(bytes.fromhex(case["key"])), []
        while len(chosen) < min(case["k"], case["n"]):
            i = _uniform_below(words, case["n"])
            if i not in chosen:
                chosen.append(i)
        assert chosen == case["chosen"]
    leaves = [bytes.fromhex(x) for x in doc["merkle"]["leaves"]]
    assert [_merkle(leaves[:n]).hex() for n in range(len(leaves) + 1)] == doc["merkle"]["roots_of_first_n_leaves"]


# ---- section 3 -------------------------------------------------------------------------------------
def test_drand_by_definition():
    from verification.drand import Beacon, ChainInfo, verify_beacon

    doc = _load("drand.json")
    for name, net in doc["public_networks"].items():
        data = (net["period"].to_bytes(4, "big") + net["genesis_time"].to_bytes(8, "big", signed=True)
                + bytes.fromhex(net["public_key"]) + bytes.fromhex(net["group_hash"]))
        if name != "default":
            data += net["beacon_id"].encode()
        assert hashlib.sha256(data).hexdigest() == net["chain_hash"]
    loc = doc["local"]
    r = int(doc["bls12_381_r"], 16)
    assert int.from_bytes(_prf("local-drand-key", loc["seed"]), "big") % r == int(loc["secret_key_be"], 16)
    assert _prf("local-drand-group", loc["seed"]).hex() == loc["group_hash"]
    data = (loc["period"].to_bytes(4, "big") + loc["genesis_time"].to_bytes(8, "big") + bytes.fromhex(loc["public_key"])
            + bytes.fromhex(loc["group_hash"]) + loc["beacon_id"].encode())
    assert hashlib.sha256(data).hexdigest() == loc["chain_hash"]
    info = ChainInfo("local", bytes.fromhex(loc["public_key"]), loc["period"], loc["genesis_time"],
                     bytes.fromhex(loc["group_hash"]), loc["scheme"], loc["beacon_id"])
    for rnd in loc["rounds"]:
        sig = bytes.fromhex(rnd["signature"])
        assert hashlib.sha256(sig).hexdigest() == rnd["randomness"]
        assert verify_beacon(info, Beacon(info.chain_hash(), rnd["round"], sig), expected_round=rnd["round"]).hex() \
            == rnd["randomness"]
    for case in loc["round_at"]:
        t = case["time"]
        assert case["round"] == (0 if t < loc["genesis_time"] else (t - loc["genesis_time"]) // loc["period"] + 1)


# ---- section 4 -------------------------------------------------------------------------------------
def test_challenge_by_definition():
    doc = _load("challenge.json")
    ws = _prf("window", doc["netuid"], doc["window"], bytes.fromhex(doc["block_hash"]),
              bytes.fromhex(doc["problem_randomness"]))
    assert ws.hex() == doc["window_seed"]
    assert [_prf("problem", ws, doc["hotkey"], g).hex() for g in range(4)] == doc["problem_seeds"]
    assert _prf("sketch", ws).hex() == doc["sketch_key"]
    genesis, period = 1_700_000_000, 3
    assert doc["opening_round"] == (doc["deadline_time"] + 6 - genesis) // period + 1 + 1
    o_seed = _prf("open", doc["netuid"], doc["window"], bytes.fromhex(doc["opening_randomness"]))
    assert o_seed.hex() == doc["opening_seed"]
    key = _prf("open-groups", o_seed, doc["hotkey"], bytes.fromhex(doc["rows_root"]))
    for n, chosen in doc["checked_groups"].items():
        words, out = _words(key), []
        while len(out) < min(4, int(n)):
            i = _uniform_below(words, int(n))
            if i not in out:
                out.append(i)
        assert out == chosen
    mix = doc["environment_choice"]
    envs = mix["generation"]["environments"]
    for case in mix["cases"]:
        u = _uniform_below(_words(_prf("env-choice", bytes.fromhex(case["problem_seed"]))), mix["total_weight"])
        acc = 0
        for e in envs:
            acc += e["weight"]
            if u < acc:
                break
        assert (u, e["name"]) == (case["u"], case["environment"])


# ---- section 5 -------------------------------------------------------------------------------------
def _uniform_by_definition(key: int, j: int) -> float:
    """docs/protocol.md section 5 in plain integers: splitmix64's finalizer over key + (j+1) GAMMA."""
    z = (key + (j + 1) * GAMMA) & M64
    z = ((z ^ (z >> 30)) * MIX1) & M64
    z = ((z ^ (z >> 27)) * MIX2) & M64
    z ^= z >> 31
    return ((z >> 11) + 0.5) / 2**53


def test_sampling_vectors():
    doc = _load("sampling.json")
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
        # and with nothing but math: argmax of float64(lp) + -ln(-ln u)
        scores = [float.fromhex(x) + -math.log(-math.log(float.fromhex(u)))
                  for x, u in zip(s["logprobs_float32_hex"], pos["uniforms"])]
        assert scores.index(max(scores)) == pos["token"]


# ---- section 6 -------------------------------------------------------------------------------------
def test_sketch_by_definition():
    doc = _load("sketch.json")
    key = bytes.fromhex(doc["sketch_key"])
    for case in doc["cases"]:
        d = case["d"]
        stream = hashlib.shake_256(PRF_PREFIX + b"sketch-vectors\x00" + b"b" + (32).to_bytes(4, "big") + key
                                   + b"i" + (8).to_bytes(4, "big") + d.to_bytes(8, "big")).digest((4 * d + 7) // 8)
        assert stream.hex() == case["stream_hex"]
        bits = [(stream[b // 8] >> (b % 8)) & 1 for b in range(4 * d)]
        vectors = [[1 if bits[k * d + i] else -1 for i in range(d)] for k in range(4)]
        assert ["".join("+" if x > 0 else "-" for x in row) for row in vectors] == case["vectors"]
        for h, q in zip(case["hidden_float32"], case["sketch"]):
            norm = math.sqrt(sum(x * x for x in h))
            dots = [sum(x * r for x, r in zip(h, row)) / norm for row in vectors]
            # float64 sums in a different order: a .5 tie would make this check ambiguous, so assert none is near
            expect = [max(-32767, min(32767, round(1024 * v))) for v in dots]
            assert all(abs(1024 * v - math.floor(1024 * v) - 0.5) > 1e-6 for v in dots)
            assert expect == q
    assert doc["clamped"]["sketch"][0] == 32767


# ---- section 7 / appendix C --------------------------------------------------------------------------
def test_model_by_definition():
    doc = _load("model.json")
    leaves = []
    for t in doc["tensors"]:
        shape = ",".join(str(x) for x in t["shape"])
        leaf = _prf("tensor", t["name"], "<f4", shape, bytes.fromhex(t["sha256_le"]))
        assert leaf.hex() == t["leaf"]
        leaves.append(leaf)
        if "norm" in t["name"]:
            assert t["first_4_float32_hex"] == [float(1).hex()] * 4
        else:  # appendix C: PCG64 seeded with the first 16 bytes of PRF("tiny-weights", seed, name), big-endian
            s = int.from_bytes(_prf("tiny-weights", doc["seed"], t["name"])[:16], "big")
            std = 0.2 if t["name"] == "lm_head.weight" else 0.05
            draws = np.random.Generator(np.random.PCG64(s)).normal(0.0, std, size=4).astype(np.float32)
            assert [float(x).hex() for x in draws] == t["first_4_float32_hex"]
    assert [t["name"] for t in doc["tensors"]] == sorted(t["name"] for t in doc["tensors"])
    assert _merkle(leaves).hex() == doc["tensors_root"]
    assert hashlib.sha256(doc["tokenizer_to_str"].encode()).hexdigest() == doc["tokenizer_sha256"]
    assert hashlib.sha256(doc["chat_template"].encode()).hexdigest() == doc["chat_template_sha256"]
    gen = doc["generation_canonical_json"]
    assert json.dumps(json.loads(gen), sort_keys=True, separators=(",", ":")) == gen
    fp = _prf("model", bytes.fromhex(doc["tensors_root"]), bytes.fromhex(doc["tokenizer_sha256"]),
              bytes.fromhex(doc["chat_template_sha256"]), hashlib.sha256(gen.encode()).digest())
    assert fp.hex() == doc["fingerprint"]
    # appendix C: the byte tokenizer, by its definition (GPT-2's byte-to-character map, sorted)
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in printable)})
    rank = {ch: i for i, ch in enumerate(sorted(chars.values()))}
    byte_of_id = {rank[ch]: b for b, ch in chars.items()}
    text = "<|im_start|>user\n" + doc["chat_prompt"]["user_text"] + "<|im_end|>\n<|im_start|>assistant\n"
    ids, rest = [], text
    while rest:
        for special, sid in doc["special_tokens"].items():
            if rest.startswith(special):
                ids.append(sid)
                rest = rest[len(special):]
                break
        else:
            ids.extend(rank[chars[b]] for b in rest[0].encode())
            rest = rest[1:]
    assert ids == doc["chat_prompt"]["ids"]
    for case in doc["decode_skip_special"]:
        raw = bytes(byte_of_id[i] for i in case["ids"] if i < 256)
        assert raw.decode("utf-8", "replace") == case["text"]


# ---- section 8 -------------------------------------------------------------------------------------
def test_advantages_by_definition():
    for case in _load("environments.json")["advantages"]:
        x = [r / 1e6 for r in case["rewards"]]
        mean = sum(x) / len(x)
        std = math.sqrt(sum((v - mean) ** 2 for v in x) / len(x))
        assert [round((v - mean) / (std + 1e-4) * 1e6) for v in x] == case["advantages"]


def test_library_environments_by_definition():
    """rg_* problems re-derived from the document: library seed from the PRF, the item straight from
    reasoning-gym's classes (not through verification/), the prompt and the exact-integer reward."""
    from reasoning_gym.arithmetic.basic_arithmetic import BasicArithmeticDataset, BasicArithmeticDatasetConfig
    from reasoning_gym.arithmetic.chain_sum import ChainSumConfig, ChainSumDataset

    doc = _load("environments.json")
    lib = doc["library"]
    assert lib["reasoning_gym_version"] == "0.1.25"
    root = Path(importlib.util.find_spec("reasoning_gym").origin).parent
    for rel, digest in lib["file_sha256"].items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
    classes = {"rg_chain_sum": (ChainSumDataset, ChainSumConfig),
               "rg_basic_arithmetic": (BasicArithmeticDataset, BasicArithmeticDatasetConfig)}
    for name, (dataset, config) in classes.items():
        cases = doc["environments"][name]
        assert len(cases) == 6
        for case in cases:
            seed = bytes.fromhex(case["problem_seed"])
            lseed = int.from_bytes(_prf("rg-seed", name, seed, 0)[:8], "big") >> 1
            assert case["answer"]["library_seed"] == lseed and case["answer"]["attempt"] == 0
            p = case["params"]
            kwargs = {"min_terms": p["min_terms"], "max_terms": p["max_terms"], "min_digits": p["min_digits"],
                      "max_digits": p["max_digits"], "allow_negation": False}
            if name == "rg_basic_arithmetic":
                kwargs.update(operators=("+", "-", "*"), allow_parentheses=False)
            assert kwargs == {k: tuple(v) if isinstance(v, list) else v
                              for k, v in lib["configs"][name][next(i for i, q in enumerate(
                                  make_vectors.RG_PARAMS[name]) if q == p)].items()}
            item = dataset(config(**kwargs, seed=lseed, size=1))[0]
            assert case["prompt"] == item["question"] + " Give the final answer as a number on the last line."
            answer = int(item["answer"])
            assert case["answer"]["answer"] == answer
            for c in case["completions"]:
                numbers = list(__import__("re").finditer(
                    r"(?<![0-9A-Za-z_])(-?)([0-9]+(?:,[0-9]{3})*(?![0-9]))(?:\.([0-9]+))?", c["text"][:4096]))
                value = None
                if numbers and not (numbers[-1].group(3) or "").strip("0"):
                    value = int(numbers[-1].group(2).replace(",", "")) * (-1 if numbers[-1].group(1) else 1)
                assert c["reward"] == (1_000_000 if value == answer else 0), c


def test_environment_prompts_by_definition():
    doc = _load("environments.json")["environments"]
    for case in doc["add"]:
        p, words = case["params"], _words(_prf("env", "add", bytes.fromhex(case["problem_seed"])))
        between = lambda lo, hi: lo + _uniform_below(words, hi - lo + 1)  # noqa: E731
        k = between(p["min_terms"], p["max_terms"])
        terms = []
        for _ in range(k):
            d = between(p["min_digits"], p["max_digits"])
            terms.append(between(10 ** (d - 1), 10**d - 1))
        assert terms == case["answer"]["terms"]
        assert case["prompt"] == ("Compute " + " + ".join(map(str, terms))
                                  + ". Give the final answer as a number on the last line.")


# ---- sections 9, 10, 12, 13 ------------------------------------------------------------------------------
def test_bundle_by_definition(tiny_base):
    from verification.generation import GenerationParams
    from verification.signing import verify
    from verification.verifier import Expectation, Verifier
    from verification.drand_local import LocalDrand

    doc = _load("bundle.json")
    model = _load("model.json")
    # the bundle's model: the tiny model under the base params with groups = 2 (section 15), whose
    # fingerprint is section 7's over the same weights, tokenizer and template
    gen = doc["generation_canonical_json"]
    base_gen = json.loads(model["generation_canonical_json"])
    assert json.loads(gen) == {**base_gen, "params": {**base_gen["params"], "groups": 2}}
    fp = _prf("model", bytes.fromhex(model["tensors_root"]), bytes.fromhex(model["tokenizer_sha256"]),
              bytes.fromhex(model["chat_template_sha256"]), hashlib.sha256(gen.encode()).digest())
    assert fp.hex() == doc["model_fingerprint"] != model["fingerprint"]
    tiny = tiny_base.with_generation(GenerationParams.from_json(json.loads(gen)["params"]))
    assert tiny.fingerprint == fp
    data = base64.b64decode(doc["file_base64"])
    assert hashlib.sha256(data).hexdigest() == doc["file_sha256"]
    assert data.startswith(b"RPROOF1\n")
    body = json.loads(data[8:])
    assert json.dumps(body, sort_keys=True, separators=(",", ":")).encode() == data[8:]
    assert body["header"] == doc["header"] and body["header"]["beacon"]["previous_signature"] == ""
    header_json = json.dumps(body["header"], sort_keys=True, separators=(",", ":"))
    assert header_json == doc["header_canonical_json"]
    message = _prf("bundle-header", header_json.encode())
    assert message.hex() == doc["signing_message"]
    verify(doc["hotkey"], message, bytes.fromhex(body["signature"]))
    digests = []
    for g, gd in zip(body["groups"], doc["groups"]):
        prompt = base64.b64decode(g["prompt"])
        assert list(np.frombuffer(prompt, "<u4")) == gd["prompt_ids"]
        rewards = []
        for r, rd in zip(g["rollouts"], gd["rollouts"]):
            adv = r["advantage"].to_bytes(8, "big", signed=True)
            digest = _prf("row", g["index"], r["index"], g["environment"], prompt, base64.b64decode(r["completion"]),
                          base64.b64decode(r["logprobs"]), base64.b64decode(r["sketches"]), r["reward"], adv)
            assert digest.hex() == rd["row_digest"]
            digests.append(digest)
            rewards.append(r["reward"])
    assert _merkle(digests).hex() == doc["rows_root"] == body["header"]["rows_root"]
    verified = [bytes.fromhex(d) for d in doc["verified_root"]["verified_row_digests"]]
    assert _merkle([_prf("verified", doc["verified_root"]["uid"], d) for d in verified]).hex() == doc["verified_root"]["root"]
    c = doc["commitment"]
    assert bytes.fromhex(c["hex"]) == (b"rp3" + c["window"].to_bytes(8, "big") + bytes.fromhex(doc["file_sha256"])
                                       + c["committed_base"].encode())
    # the verdicts, recomputed by the reference Verifier from the file alone
    drand = LocalDrand()
    h = body["header"]
    expected = Expectation(netuid=h["netuid"], window=h["window"], hotkey=h["hotkey"],
                           block_hash=bytes.fromhex(h["block_hash"]), block_time=h["block_time"],
                           fingerprint=bytes.fromhex(h["model_fingerprint"]))
    verdict = Verifier(tiny, [drand.info]).verify_bytes(data, expected)
    assert [[v.group, v.rollout, v.reason] for v in verdict.rollouts] == doc["verdict_all_groups_opened"]["rollout_reasons"]
    assert verdict.ok and doc["verdict_all_groups_opened"]["ok"]


# ---- section 15 ------------------------------------------------------------------------------------
def _lora_tensor(name: str, shape: list[int]) -> np.ndarray:
    """The vector adapter's values by the rule the file states: ((w >> 40) - 2^23) / 2^27, C order."""
    words = _words(_prf("vectors/lora", name))
    return np.array([((next(words) >> 40) - 2**23) / 2**27 for _ in range(shape[0] * shape[1])],
                    dtype=np.float32).reshape(shape)


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def test_checkpoint_by_definition(tiny_base):
    from bittensor.sp_core import Keypair
    from safetensors.numpy import load

    from verification.checkpoint import parse_manifest, verify_manifest_signature
    from verification.checkpoint_model import load_checkpoint
    from verification.signing import verify

    doc, model = _load("checkpoint.json"), _load("model.json")
    assert doc["base_weights_root"] == model["tensors_root"] and doc["base_fingerprint"] == model["fingerprint"]
    # the adapter tensors: their values by definition, in the file, and their leaves and root (section 7)
    data = base64.b64decode(doc["adapter_file_base64"])
    assert hashlib.sha256(data).hexdigest() == doc["adapter_file_sha256"] and len(data) == doc["adapter_file_bytes"]
    in_file = load(data)
    assert sorted(in_file) == [t["name"] for t in doc["tensors"]]
    tensors, leaves = {}, []
    for t in doc["tensors"]:
        arr = _lora_tensor(t["name"], t["shape"])
        assert np.array_equal(in_file[t["name"]], arr) and in_file[t["name"]].dtype == np.float32
        digest = hashlib.sha256(arr.astype("<f4").tobytes()).digest()
        assert digest.hex() == t["sha256_le"]
        assert [float(x).hex() for x in arr.reshape(-1)[:4]] == t["first_4_float32_hex"]
        leaf = _prf("tensor", t["name"], "<f4", ",".join(map(str, t["shape"])), digest)
        assert leaf.hex() == t["leaf"]
        leaves.append(leaf)
        tensors[t["name"]] = arr
    assert _merkle(leaves).hex() == doc["adapter_tensors_root"]
    assert _canonical(doc["adapter"]).decode() == doc["adapter_canonical_json"]
    root = _prf("lora-weights", bytes.fromhex(doc["base_weights_root"]), bytes.fromhex(doc["adapter_tensors_root"]),
                doc["adapter_canonical_json"].encode())
    assert root.hex() == doc["weights_root"]
    gen = doc["generation_canonical_json"]
    assert gen == _canonical({"eos_ids": model["eos_ids"], "params": doc["generation"]}).decode()
    fp = _prf("model", root, bytes.fromhex(model["tokenizer_sha256"]), bytes.fromhex(model["chat_template_sha256"]),
              hashlib.sha256(gen.encode()).digest())
    assert fp.hex() == doc["fingerprint"]
    # the manifest: canonical JSON, its body signed by the trainer's sr25519 key (randomized: verified)
    raw = doc["manifest"].encode()
    manifest = json.loads(raw)
    assert _canonical(manifest) == raw and hashlib.sha256(raw).hexdigest() == doc["manifest_sha256"]
    assert len(raw) == doc["manifest_bytes"]
    assert (manifest["fingerprint"], manifest["weights_root"], manifest["base_fingerprint"]) == \
        (doc["fingerprint"], doc["weights_root"], doc["base_fingerprint"])
    assert manifest["adapter"] == doc["adapter"] and manifest["generation"] == doc["generation"]
    assert manifest["files"] == [{"name": doc["adapter_file_name"], "sha256": doc["adapter_file_sha256"],
                                  "size": doc["adapter_file_bytes"]}]
    body = {k: v for k, v in manifest.items() if k != "signature"}
    assert _canonical(body).decode() == doc["manifest_body_canonical_json"]
    message = _prf("checkpoint-manifest", _canonical(body))
    assert message.hex() == doc["signing_message"] and manifest["signature"] == doc["signature"]
    assert bytes(Keypair(ss58_address=doc["trainer_hotkey"]).public_key).hex() == doc["trainer_public_key"]
    assert bytes(Keypair.create_from_uri(doc["trainer_uri"]).public_key).hex() == doc["trainer_public_key"]
    verify(doc["trainer_hotkey"], message, bytes.fromhex(doc["signature"]))
    # the merge of section 15, in numpy float32 (elementwise IEEE operations), against the reference's load
    scale = np.float32(doc["adapter"]["alpha"] / doc["adapter"]["rank"])
    assert float(scale).hex() == doc["merged"]["scale_float32_hex"]
    state = tiny_base.model.state_dict()
    for m in doc["merged"]["modules"]:
        a, b = tensors[m["module"] + ".lora_A.weight"], tensors[m["module"] + ".lora_B.weight"]
        delta = np.zeros((b.shape[0], a.shape[1]), dtype=np.float32)
        for k in range(a.shape[0]):
            delta = delta + b[:, k:k + 1] * a[k:k + 1, :]
        delta = delta * scale
        w = state[m["module"] + ".weight"].numpy() + delta
        assert delta.dtype == w.dtype == np.float32 and list(w.shape) == m["shape"]
        assert hashlib.sha256(delta.astype("<f4").tobytes()).hexdigest() == m["delta_sha256_le"]
        assert hashlib.sha256(w.astype("<f4").tobytes()).hexdigest() == m["merged_sha256_le"]
        assert [float(x).hex() for x in w.reshape(-1)[:4]] == m["merged_first_4_float32_hex"]
    parsed = parse_manifest(raw)
    verify_manifest_signature(parsed, doc["trainer_hotkey"])
    lm = load_checkpoint(tiny_base, parsed, {doc["adapter_file_name"]: data})
    assert lm.fingerprint.hex() == doc["fingerprint"]
    merged_state = lm.model.state_dict()
    for m in doc["merged"]["modules"]:
        w = merged_state[m["module"] + ".weight"].numpy()
        assert hashlib.sha256(w.astype("<f4").tobytes()).hexdigest() == m["merged_sha256_le"]


def test_announcement_by_definition():
    from verification.announcement import decode_announcement
    from verification.constants import ANNOUNCEMENT_MAGIC, MAX_ANNOUNCEMENT_BYTES
    from verification.errors import CheckpointError

    doc, ckpt = _load("announcement.json"), _load("checkpoint.json")
    assert (doc["fingerprint"], doc["manifest_sha256"]) == (ckpt["fingerprint"], ckpt["manifest_sha256"])
    assert doc["manifest_name"] == f"rollproof/{doc['netuid']}/checkpoints/{doc['fingerprint']}/manifest.json"
    head = ANNOUNCEMENT_MAGIC + doc["from_window"].to_bytes(8, "big") + bytes.fromhex(doc["fingerprint"]) \
        + bytes.fromhex(doc["manifest_sha256"])
    assert {c["form"] for c in doc["cases"]} == {"base", "full"}
    for c in doc["cases"]:
        data = bytes.fromhex(c["hex"])
        assert data == head + c["committed_location"].encode() and len(data) == c["bytes"] <= MAX_ANNOUNCEMENT_BYTES
        if c["form"] == "base":
            assert c["committed_location"].endswith("/")
            assert c["committed_location"] + doc["manifest_name"] == c["manifest_location"]
        else:
            assert not c["committed_location"].endswith("/") and c["committed_location"] == c["manifest_location"]
        assert decode_announcement(doc["netuid"], data).location == c["manifest_location"]
    assert max(c["bytes"] for c in doc["cases"]) == MAX_ANNOUNCEMENT_BYTES
    for r in doc["refused"]:
        with pytest.raises(CheckpointError):
            decode_announcement(doc["netuid"], bytes.fromhex(r["hex"]))


# ---- section 16, by definition -------------------------------------------------------------------------
_HEXFLOAT_WRITTEN = r"-?0x[01]\.[0-9a-f]{13}p[+-]\d+|-?0x0\.0p\+0"


def _hex_strings(obj):
    """Every string value of obj that holds a float (written as float.hex())."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _hex_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _hex_strings(v)
    elif isinstance(obj, str) and obj.lstrip("-").startswith("0x"):
        yield obj


def _mean_of_rollouts(rewards: list[int], rollouts: int) -> float:
    per_problem = [sum(rewards[i:i + rollouts]) / rollouts / 1_000_000 for i in range(0, len(rewards), rollouts)]
    return sum(per_problem) / len(per_problem)


def test_training_by_definition():
    import re

    from verification.errors import TrainingRecordError
    from verification.training_record import parse_training_record

    doc, bundle, ckpt, model = _load("training.json"), _load("bundle.json"), _load("checkpoint.json"), _load("model.json")
    raw = doc["record_canonical_json"].encode()
    record = json.loads(raw)
    # canonical JSON (section 2), its hash, and the fields of section 16
    assert _canonical(record) == raw and hashlib.sha256(raw).hexdigest() == doc["record_sha256"]
    assert len(raw) == doc["record_bytes"]
    assert set(record) == {"format", "netuid", "version", "parent", "start", "validator", "windows", "lineage",
                           "settings", "world_size", "events", "end"}
    assert record["format"] == doc["record_format"] == "rollproof-training/1"
    assert record["parent"] == {"fingerprint": model["fingerprint"], "version": 0, "manifest_sha256": None}
    assert record["lineage"] == [{"fingerprint": model["fingerprint"], "version": 0}]
    assert record["start"]["optimizer_sha256"] is None
    assert _canonical(record["settings"]).decode() == doc["settings_default_canonical_json"]
    # floats: float.hex() strings, the one written form of each float64
    floats = list(_hex_strings(record))
    assert len(floats) > 20
    for s in floats:
        assert re.fullmatch(_HEXFLOAT_WRITTEN, s), s
        assert float.fromhex(s).hex() == s
    train, trainer = record["settings"]["train"], record["settings"]["trainer"]
    assert float.fromhex(train["lr"]) == 5e-5 and [float.fromhex(b) for b in train["betas"]] == [0.9, 0.999]
    assert float.fromhex(trainer["gate_margin"]) == 0.02 and train["temperature"] is None
    events = record["events"]
    assert [e["kind"] for e in events] == ["window", "window", "window", "candidate", "return_to_anchor", "window",
                                           "window", "candidate"]
    steps = [{k: float.fromhex(v) for k, v in e["step"].items()} for e in events if e["kind"] == "window" and e["step"]]
    assert steps == [{"grad_norm": 0.75, "clipped_share": 0.0, "loss": -0.1},
                     {"grad_norm": 3.5, "clipped_share": 0.625, "loss": 0.25},
                     {"grad_norm": 0.1, "clipped_share": 1 / 3, "loss": -2.5e-3}]
    # the rows: leaves PRF("verified", uid:int, row digest:bytes) of bundle.json's verified rows (section 13)
    uid = bundle["verified_root"]["uid"]
    leaves = [_prf("verified", uid, bytes.fromhex(d)) for d in bundle["verified_root"]["verified_row_digests"]]
    assert [x.hex() for x in leaves] == doc["row_leaves"]["leaves"] and doc["row_leaves"]["uid"] == uid
    assert _merkle(leaves).hex() == bundle["verified_root"]["root"]
    windows = {e["window"]: e for e in events if e["kind"] == "window"}
    assert windows[7]["rows"] == doc["row_leaves"]["leaves"]
    assert windows[8]["rows"] + windows[9]["rows"] == doc["row_leaves"]["leaves"]
    assert windows[7]["bundles"] == {str(uid): bundle["file_sha256"]}
    assert windows[5]["report_sha256"] is None and windows[5]["outcome"] == "not_trained"
    for w in (6, 7, 8, 9):
        assert windows[w]["report_sha256"] == _prf("vectors/report", w).hex()
    # the gate on the recorded rewards (section 16): withheld exactly when the candidate's held-out mean
    # is below the parent's by more than gate_margin
    margin, rollouts = float.fromhex(trainer["gate_margin"]), trainer["heldout_rollouts"]
    for e in (e for e in events if e["kind"] == "candidate"):
        n = trainer["heldout_problems"] * rollouts
        assert len(e["heldout"]["parent"]) == len(e["heldout"]["candidate"]) == n
        withheld = _mean_of_rollouts(e["heldout"]["candidate"], rollouts) < \
            _mean_of_rollouts(e["heldout"]["parent"], rollouts) - margin
        assert withheld == (e["stage"] == "withheld")
    assert events[-1]["stage"] == "announced" and events[-1]["version"] == record["version"]
    assert events[-1]["adapter_sha256"] == record["end"]["adapter_sha256"] == ckpt["adapter_file_sha256"]
    # the start adapter: checkpoint.json's lora_A tensors, every lora_B zero (the base model)
    start = doc["start_adapter"]
    assert record["start"]["adapter_sha256"] == start["file_sha256"]
    by_name = {t["name"]: t for t in ckpt["tensors"]}
    assert [t["name"] for t in start["tensors"]] == sorted(by_name)
    for t in start["tensors"]:
        if t["name"].endswith("lora_B.weight"):
            zeros = np.zeros(t["shape"], dtype="<f4").tobytes()
            assert t["sha256_le"] == hashlib.sha256(zeros).hexdigest()
        else:
            assert t["sha256_le"] == by_name[t["name"]]["sha256_le"]
    assert start["config"]["rank"] == ckpt["adapter"]["rank"]
    # the optimizer file: "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.step" per adapter tensor
    opt = doc["optimizer"]
    assert record["end"]["optimizer_sha256"] == opt["file_sha256"]
    assert opt["metadata"] == {"rollproof_optimizer": _canonical({"format": "rollproof-adamw/1"}).decode()}
    assert [t["name"] for t in opt["tensors"]] == sorted(f"{n}.{p}" for n in by_name
                                                         for p in ("exp_avg", "exp_avg_sq", "step"))
    for t in opt["tensors"]:
        name, part = t["name"].rsplit(".", 1)
        if part == "step":
            arr = np.array([1.0], dtype=np.float32)
        else:
            words = _words(_prf("vectors/adam-m" if part == "exp_avg" else "vectors/adam-v", name))
            n = int(np.prod(t["shape"]))
            values = [((next(words) >> 40) - 2**23) / 2**27 if part == "exp_avg" else (next(words) >> 40) / 2**40
                      for _ in range(n)]
            arr = np.array(values, dtype=np.float32)
            assert t["shape"] == by_name[name]["shape"]
        assert hashlib.sha256(arr.astype("<f4").tobytes()).hexdigest() == t["sha256_le"]
    # records a reader refuses: the minimal record (which parses) with one change each
    minimal = doc["minimal_canonical_json"]
    parse_training_record(minimal.encode())
    for r in doc["refused"]:
        assert minimal.count(r["old"]) == 1
        data = minimal.replace(r["old"], r["new"]).encode()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        with pytest.raises(TrainingRecordError, match=re.escape(r["error"])):
            parse_training_record(data)
    assert any(_canonical(json.loads(minimal.replace(r["old"], r["new"]))).decode()
               != minimal.replace(r["old"], r["new"]) for r in doc["refused"])
