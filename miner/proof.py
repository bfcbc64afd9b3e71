"""Builds a signed bundle for one window: problems from the window seed, GRPO groups, rewards,
advantages, per-token proofs, rows root, hotkey signature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from miner.engine import GeneratedRollout, RolloutRequest
from miner.engines import Engine, HFEngine
from verification import environments
from verification.bundle import BeaconModel, Bundle, Group, Header, Rollout, rows_root
from verification.constants import PROTOCOL_VERSION
from verification.generation import GenerationParams
from verification.grpo import advantages
from verification.model import LoadedModel
from verification.signing import sign
from verification.window import WindowContext


@dataclass(frozen=True)
class PlannedGroup:
    """One group of a window before generation: its index, problem, prompt ids and the rollout
    requests (group_size of them, sharing the prompt and the problem seed)."""
    index: int
    problem: object
    prompt: list[int]
    requests: list[RolloutRequest]


def plan_groups(lm: LoadedModel, ctx: WindowContext, hotkey: str, group_indices: list[int]) -> list[PlannedGroup]:
    """Each group's problem (from the window seed and the hotkey), prompt and rollout requests."""
    plans = []
    for gi in group_indices:
        seed = ctx.problem_seed(hotkey, gi)
        _, problem = environments.problem_for(seed, lm.generation)
        prompt = lm.chat_prompt_ids(problem.prompt)
        plans.append(PlannedGroup(gi, problem, prompt,
                                  [RolloutRequest(prompt, seed, r) for r in range(lm.generation.group_size)]))
    return plans


def rollout_requests(lm: LoadedModel, ctx: WindowContext, hotkey: str, group_indices: list[int]) -> list[RolloutRequest]:
    """The rollout requests of those groups, in (group, rollout) order: what an engine generates."""
    return [r for plan in plan_groups(lm, ctx, hotkey, group_indices) for r in plan.requests]


def build_groups(lm: LoadedModel, ctx: WindowContext, hotkey: str, group_indices: list[int], *,
                 batch_size: int = 16, engine: Engine | None = None,
                 on_tokens: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Group]:
    """The GRPO groups of `group_indices`, every rollout of every group submitted to the engine at
    once (default: the HF engine at `batch_size`)."""
    engine = engine if engine is not None else HFEngine(batch_size)
    group_size = lm.generation.group_size
    plans = plan_groups(lm, ctx, hotkey, group_indices)
    requests = [r for plan in plans for r in plan.requests]
    generated = engine.generate(lm, requests, ctx.sketch_key, on_tokens=on_tokens, should_stop=should_stop)
    groups = []
    for k, plan in enumerate(plans):
        gi, problem, prompt = plan.index, plan.problem, plan.prompt
        rows: list[GeneratedRollout] = generated[k * group_size:(k + 1) * group_size]
        env = environments.get(problem.environment)
        rewards = [env.reward(problem, lm.tokenizer.decode(g.completion, skip_special_tokens=True)) for g in rows]
        advs = advantages(rewards)
        rollouts = [
            Rollout(r, np.asarray(g.completion, dtype=np.uint32), g.logprobs, g.sketches, rewards[r], advs[r])
            for r, g in enumerate(rows)
        ]
        groups.append(Group(gi, problem.environment, np.asarray(prompt, dtype=np.uint32), rollouts))
    return groups


def assemble_bundle(ctx: WindowContext, keypair, fingerprint: bytes, groups: list[Group],
                    params: GenerationParams | Header) -> Bundle:
    """Header, rows root and signature over already-built groups (groups 0..n-1 in order).
    `params` supplies group_size and max_new_tokens: the checkpoint's GenerationParams, or the
    header of a bundle being re-signed."""
    header = Header(
        protocol_version=PROTOCOL_VERSION,
        netuid=ctx.netuid,
        window=ctx.window,
        block_hash=ctx.block_hash.hex(),
        block_time=ctx.block_time,
        hotkey=keypair.ss58_address,
        beacon=BeaconModel.from_beacon(ctx.beacon),
        model_fingerprint=fingerprint.hex(),
        group_size=params.group_size,
        max_new_tokens=params.max_new_tokens,
        n_groups=len(groups),
        rows_root=rows_root(groups).hex(),
    )
    return Bundle(header=header, signature=sign(keypair, header.signing_message()), groups=groups)


def build_bundle(lm: LoadedModel, ctx: WindowContext, keypair, n_groups: int | None = None, **kw) -> Bundle:
    """The honest bundle: all of the checkpoint's `groups` groups (n_groups: another count, which
    verifiers reject as bad_params; for tests and adversaries only)."""
    n_groups = lm.generation.groups if n_groups is None else n_groups
    groups = build_groups(lm, ctx, keypair.ss58_address, list(range(n_groups)), **kw)
    return assemble_bundle(ctx, keypair, lm.fingerprint, groups, lm.generation)
