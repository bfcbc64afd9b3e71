"""Builders for honest and cheating bundles, shared by the attack suite, the benchmarks and the
local network. Each attack is what a real cheater could do with full control of its own hotkey."""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np
import torch
from bittensor.sp_core import Keypair

from miner.proof import assemble_bundle, build_groups
from verification.bundle import BeaconModel, Bundle, encode_bundle
from verification.drand_local import LocalDrand
from verification.grpo import advantages
from verification.model import LoadedModel, build_tiny_model, load_model
from verification.sketch import sketch_vectors
from verification.verifier import Expectation, Verifier
from verification.window import WindowContext

NETUID = 7


def keypair(i: int) -> Keypair:
    return Keypair.create_from_uri(f"//rollproof-miner-{i}")


def window_ctx(drand: LocalDrand, window: int) -> WindowContext:
    block_time = drand.genesis_time + 50_000 + window * 240
    block_hash = __import__("hashlib").sha256(f"block-{window}".encode()).digest()
    return WindowContext(NETUID, window, block_hash, block_time, drand.sign(drand.info.round_at(block_time)))


def expectation(ctx: WindowContext, key: Keypair, lm: LoadedModel) -> Expectation:
    return Expectation(netuid=ctx.netuid, window=ctx.window, hotkey=key.ss58_address, block_hash=ctx.block_hash,
                       block_time=ctx.block_time, fingerprint=lm.fingerprint)


def variant(lm: LoadedModel, name: str, transform) -> LoadedModel:
    """A copy of lm whose weights or arithmetic are changed, still claiming lm's fingerprint."""
    model = transform(copy.deepcopy(lm.model))
    return replace(lm, name=name, model=model)


def perturbed(lm: LoadedModel, rel: float, seed: int = 1) -> LoadedModel:
    def t(m):
        g = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device) * p.abs().mean() * rel)
        return m
    return variant(lm, f"perturbed {rel:g}", t)


def bf16(lm: LoadedModel) -> LoadedModel:
    return variant(lm, "bf16", lambda m: m.to(torch.bfloat16))


def int8(lm: LoadedModel) -> LoadedModel:
    """Dynamic int8 quantization runs on CPU only: the quantized copy stays there (the attack is
    the same wherever the honest model runs)."""
    from torch.ao.quantization import quantize_dynamic

    quantized = variant(lm, "int8", lambda m: quantize_dynamic(m.cpu(), {torch.nn.Linear}, dtype=torch.qint8))
    return replace(quantized, device="cpu")


def smaller(lm: LoadedModel) -> LoadedModel:
    model, _ = build_tiny_model(0, layers=2)
    return replace(lm, name="2-layer", model=model.to(lm.device).eval())


def other_same_shape(lm: LoadedModel) -> LoadedModel:
    other = load_model("tiny:1", lm.device)
    return replace(lm, name="tiny:1", model=other.model)


def honest(lm, ctx, key, groups: int | None = None, engine=None) -> Bundle:
    """The honest bundle: all of the checkpoint's groups (`groups`: another count, i.e. a miner that
    commits a prefix of its problems, or more than it was given: rejected as bad_params).
    `engine`: the miner's generation engine (miner.engines; default the HF engine)."""
    groups = lm.generation.groups if groups is None else groups
    return assemble_bundle(ctx, key, lm.fingerprint,
                           build_groups(lm, ctx, key.ss58_address, list(range(groups)), engine=engine), lm.generation)


def generated_by(model_lm, lm, ctx, key, groups: int | None = None, engine=None) -> Bundle:
    """Generation (and its own proofs) by model_lm (on `engine`, default HF), signed as if by the
    agreed model."""
    groups = lm.generation.groups if groups is None else groups
    return assemble_bundle(ctx, key, lm.fingerprint,
                           build_groups(model_lm, ctx, key.ss58_address, list(range(groups)), engine=engine),
                           lm.generation)


def cheap_generation_honest_prefill(cheap, lm, ctx, key, groups: int | None = None, engine=None) -> Bundle:
    """Tokens from a cheap model (on `engine`, default HF); logprobs and sketches from an honest
    prefill of the agreed model."""
    bundle = generated_by(cheap, lm, ctx, key, groups, engine=engine)
    verifier = Verifier(lm, [])
    vectors = sketch_vectors(ctx.sketch_key, lm.hidden_size)
    for g in bundle.groups:
        seed = ctx.problem_seed(key.ss58_address, g.index)
        for r, (sketches, logprobs, _) in zip(g.rollouts, verifier.recompute(g.prompt.tolist(), g.rollouts, seed, vectors)):
            r.logprobs = logprobs.astype(np.float32)
            r.sketches = sketches
    return assemble_bundle(ctx, key, lm.fingerprint, bundle.groups, lm.generation)


def resigned(bundle: Bundle, ctx: WindowContext, key, mutate) -> Bundle:
    b = copy.deepcopy(bundle)
    mutate(b)
    return assemble_bundle(ctx, key, bytes.fromhex(b.header.model_fingerprint), b.groups, b.header)


def edit_token(b: Bundle):
    r = b.groups[0].rollouts[0]
    i = len(r.completion) // 2
    r.completion[i] = (int(r.completion[i]) + 7) % 250


def edit_logprob(b: Bundle):
    b.groups[0].rollouts[0].logprobs[3] += 0.05


def misreport_reward(b: Bundle):
    g = b.groups[0]
    g.rollouts[0].reward = 1_000_000 - g.rollouts[0].reward
    for r, a in zip(g.rollouts, advantages([r.reward for r in g.rollouts])):
        r.advantage = a


def misreport_advantage(b: Bundle):
    b.groups[0].rollouts[0].advantage += 250_000


def with_beacon(ctx: WindowContext, beacon) -> WindowContext:
    return replace(ctx, beacon=beacon)


def forged_beacon(ctx: WindowContext):
    sig = bytearray(ctx.beacon.signature)
    sig[10] ^= 0x20
    return replace(ctx.beacon, signature=bytes(sig))


def bytes_attacks(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    sig_at = data.rfind(b'"signature":"') + 14  # the hotkey signature: the last "signature" key
    flipped[sig_at] = ord("0") if flipped[sig_at] != ord("0") else ord("1")
    return {
        "truncated bundle": data[: len(data) // 2],
        "malformed bundle": data.replace(b'"groups":[', b'"groups":{', 1),
        "deeply nested bundle (parser stack)": data[:8] + b"[" * 1_000_000 + b"]" * 1_000_000,
        "bad signature (byte flipped)": bytes(flipped),
    }


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def padding_bits_set(data: bytes) -> bytes | None:
    """The same decoded content under a different byte string (and hash): the lowest bit of the
    last base64 character before '=' padding is always a padding bit. None when no field is padded
(every array a multiple of 3 bytes): then the bundle has no second encoding to try."""
    match = re.search(rb'[A-Za-z0-9+/](?==+")', data)
    if match is None:
        return None
    out = bytearray(data)
    out[match.start()] = _B64_ALPHABET[_B64_ALPHABET.index(out[match.start()]) ^ 1]
    return bytes(out)


__all__ = [name for name in dir() if not name.startswith("_")] + ["BeaconModel", "encode_bundle"]


def steered_short(lm: LoadedModel, ctx: WindowContext, key, groups: int | None = None, engine=None) -> Bundle:
    """The steering attack: an honest bundle whose every rollout is ended early with EOS at the
    position where EOS comes closest to being the seeded sample (the smallest Gumbel gap before
    the natural end). The prefix is honest, so only the EOS token is not the sample; where its gap
    is within the margin the shortened rollout is valid, and the margin alone decides how much a
    miner can shorten (cheaper work, biased data). Rewards and advantages are recomputed."""
    from verification import environments
    from verification.sampling import gumbel_noise, noise_keys, sampling_gap

    bundle = honest(lm, ctx, key, groups, engine=engine)
    eos = min(lm.eos_ids)
    for g in bundle.groups:
        seed = ctx.problem_seed(key.ss58_address, g.index)
        _, problem = environments.problem_for(seed, lm.generation)
        env = environments.get(problem.environment)
        forced = lm.teacher_forced(g.prompt.tolist(), [r.completion for r in g.rollouts])
        for r, (_, lp) in zip(g.rollouts, forced):
            n = len(r.completion)
            if n < 2:
                continue
            keys = noise_keys(seed, r.index, n)
            gaps = [sampling_gap(lp[i], gumbel_noise(int(keys[i]), lp.shape[-1]), eos) for i in range(n - 1)]
            i = int(np.argmin(gaps))
            r.completion = np.concatenate([r.completion[:i], [eos]]).astype(np.uint32)
            r.logprobs = np.concatenate([r.logprobs[:i], [lp[i, eos]]]).astype(np.float32)
            r.sketches = r.sketches[:i + 1].copy()
            r.reward = env.reward(problem, lm.tokenizer.decode(r.completion.tolist(), skip_special_tokens=True))
        for r, a in zip(g.rollouts, advantages([r.reward for r in g.rollouts])):
            r.advantage = a
    return assemble_bundle(ctx, key, lm.fingerprint, bundle.groups, lm.generation)
