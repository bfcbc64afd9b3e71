"""The acceptance gate's measurement: mean reward on a fixed held-out problem set.

Held-out problem i of netuid n has seed PRF("heldout", n, i): miners' problem seeds are PRF outputs
over window seeds and hotkeys, so no trained problem is ever a held-out one. Each problem is drawn
from the checkpoint's environment mix and difficulty params as a miner's would be, and answered with
the protocol's seeded sampling at the checkpoint's temperature (`rollouts` rollouts per problem);
the noise is fixed by (seed, rollout, position), so two checkpoints are compared on the same
problems with the same noise: a paired comparison. The chance baseline is the mean over the same
problems of each environment's chance_reward (a uniformly random well-formed answer)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from miner.engine import RolloutRequest, generate
from verification import environments
from verification.constants import GREEDY_GATE_MIN_DROP
from verification.environments.base import REWARD_SCALE
from verification.generation import GenerationParams
from verification.model import LoadedModel
from verification.prf import prf
from verification.sketch import sketch_vectors


@dataclass
class HeldoutResult:
    fingerprint: str
    rewards: list[float]  # per problem, mean over its rollouts, in [0, 1]
    chance: float  # mean chance reward in [0, 1]
    correct_share: float  # rollouts with full reward
    rollout_rewards: list[int] = field(default_factory=list)  # per rollout, problem-major, micro-units

    @property
    def mean(self) -> float:
        return float(np.mean(self.rewards)) if self.rewards else 0.0


@dataclass
class PairedDifference:
    mean: float
    half_width: float  # 95% normal-approximation half width
    n: int
    per_problem: list[float] = field(default_factory=list)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def heldout_seeds(netuid: int, n: int) -> list[bytes]:
    """The acceptance gate's problems."""
    return [prf("heldout", netuid, i) for i in range(n)]


def evaluation_seeds(netuid: int, n: int, task: str = "") -> list[bytes]:
    """The evaluation's problems (reports, learning curves): a seed space of their own, disjoint
    from the miners' (PRF outputs over window seeds and hotkeys) and from the gate's, so a gate
    that selects checkpoints on its problems does not also grade them. `task` names a separate
    sequence per evaluated task."""
    return [prf("evaluation", netuid, task, i) for i in range(n)]


@dataclass
class GreedyResult:
    fingerprint: str
    correct: list[bool]  # per problem: the greedy completion earned the full reward
    chance: float  # mean chance reward in [0, 1] over the same problems
    completions: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if self.correct else 0.0

    @property
    def rewards(self) -> list[float]:
        """Per problem 1.0 or 0.0: the shape paired_difference compares."""
        return [1.0 if c else 0.0 for c in self.correct]


def evaluate_greedy(lm: LoadedModel, params: GenerationParams, seeds: list[bytes], *,
                    batch_size: int = 32) -> GreedyResult:
    """Greedy accuracy of lm on the problems of `seeds` under params (environment mix, difficulty,
    max_new_tokens); the temperature plays no part."""
    from trainer.greedy import greedy_completions

    plans = [environments.problem_for(seed, params) for seed in seeds]
    prompts = [lm.chat_prompt_ids(problem.prompt) for _, problem in plans]
    outs = greedy_completions(lm, prompts, params.max_new_tokens, batch_size=batch_size)
    correct, chance, texts = [], [], []
    for (name, problem), tokens in zip(plans, outs):
        env = environments.get(name)
        text = lm.tokenizer.decode(tokens, skip_special_tokens=True)
        texts.append(text)
        correct.append(env.reward(problem, text) == REWARD_SCALE)
        chance.append(env.chance_reward(problem) / REWARD_SCALE)
    return GreedyResult(lm.fingerprint.hex(), correct, float(np.mean(chance)) if chance else 0.0, texts)


def evaluate(lm: LoadedModel, params: GenerationParams, netuid: int, n_problems: int, *,
             rollouts: int = 2, batch_size: int = 16, seeds: list[bytes] | None = None) -> HeldoutResult:
    """Held-out reward of lm under params (its temperature must be params.temperature) on the gate's
    first n_problems problems, or on the problems of `seeds` (e.g. evaluation_seeds) when given."""
    vectors = sketch_vectors(prf("heldout-sketch", netuid), lm.hidden_size)
    plans, requests = [], []
    for seed in (heldout_seeds(netuid, n_problems) if seeds is None else seeds):
        name, problem = environments.problem_for(seed, params)
        prompt = lm.chat_prompt_ids(problem.prompt)
        plans.append((name, problem))
        requests.extend(RolloutRequest(prompt, seed, r) for r in range(rollouts))
    out = generate(lm, requests, vectors, batch_size=batch_size)
    rewards, chance, full, per_rollout = [], [], 0, []
    for k, (name, problem) in enumerate(plans):
        env = environments.get(name)
        rs = [env.reward(problem, lm.tokenizer.decode(g.completion, skip_special_tokens=True))
              for g in out[k * rollouts:(k + 1) * rollouts]]
        full += sum(1 for r in rs if r == REWARD_SCALE)
        per_rollout.extend(int(r) for r in rs)
        rewards.append(sum(rs) / len(rs) / REWARD_SCALE)
        chance.append(env.chance_reward(problem) / REWARD_SCALE)
    return HeldoutResult(lm.fingerprint.hex(), rewards, float(np.mean(chance)), full / max(1, len(requests)),
                         per_rollout)


def paired_difference(after, before) -> PairedDifference:
    """Mean per-problem difference after - before (anything with per-problem `.rewards` on the same
    problems: HeldoutResult, GreedyResult) with a 95% interval (1.96 standard errors)."""
    d = np.asarray(after.rewards) - np.asarray(before.rewards)
    n = len(d)
    if n < 2:
        return PairedDifference(float(d.mean()) if n else 0.0, math.inf, n, d.tolist())
    half = 1.96 * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(float(d.mean()), half, n, d.tolist())


def mean_of_rollouts(rollout_rewards: list[int], rollouts: int) -> float:
    """The held-out mean (0..1) of per-rollout rewards in micro-units, problem-major: the mean over
    problems of each problem's mean, as HeldoutResult.mean computes it."""
    per_problem = [sum(rollout_rewards[i:i + rollouts]) / rollouts / REWARD_SCALE
                   for i in range(0, len(rollout_rewards), rollouts)]
    return float(np.mean(per_problem)) if per_problem else 0.0


def gate_withholds(parent_rollouts: list[int], candidate_rollouts: list[int], rollouts: int, margin: float) -> bool:
    """The acceptance gate: withhold a candidate whose held-out mean is below its parent's by more
    than margin."""
    return mean_of_rollouts(candidate_rollouts, rollouts) < mean_of_rollouts(parent_rollouts, rollouts) - margin


def greedy_withholds(parent_correct, candidate_correct, margin: float) -> bool:
    """The acceptance gate's greedy measure: withhold a candidate that solves at least
    GREEDY_GATE_MIN_DROP fewer held-out problems greedily than its parent and whose greedy accuracy
    (share of problems whose greedy completion earned the full reward) is below the parent's by more
    than margin: the sampled rule with one full-or-nothing rollout per problem, which a single argmax
    flip does not trip."""
    def as_rollouts(correct) -> list[int]:
        return [REWARD_SCALE if c else 0 for c in correct]

    drop = sum(1 for c in parent_correct if c) - sum(1 for c in candidate_correct if c)
    return drop >= GREEDY_GATE_MIN_DROP and gate_withholds(as_rollouts(parent_correct),
                                                           as_rollouts(candidate_correct), 1, margin)
