"""One optimizer step over verified rollouts, with circuit breakers.

A step runs every row through the policy in micro-batches, accumulating gradients of the GRPO loss
normalised by the token count of the whole step (so micro-batching changes nothing but memory),
then decides:
  * skip (reason "non_finite") if the loss or the pre-clip global gradient norm is not finite;
  * skip ("clipped_share") if more than max_clipped_share of the tokens had their ratio clipped: the
    rows are far off the current policy (stale or forged behaviour logprobs, or a policy that moved
    too far), and the few unclipped tokens would steer the whole update;
  * skip ("grad_norm") if the pre-clip global gradient norm exceeds max_grad_norm_skip: clipping
    would hide the size, but not the direction, of a pathological gradient (absurd advantages, a
    diverged policy), so it is not applied at all;
  * otherwise clip the gradient to clip_grad_norm and step AdamW.
A skipped step zeroes the gradients and touches neither the parameters nor the optimizer state
(AdamW's moments and step count stay bit-identical), so the next good batch continues as if the bad
one never arrived.

The same engine (`run_step`) serves the distributed step (trainer/distributed.py): it takes the
module to run forward (the plain scorer, or its DDP wrapper), a no-sync context for accumulation,
and a sum-reduction for the statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.defaults import LR
from trainer.loss import EPS_HIGH, EPS_LOW, GRPOStats, grpo_loss
from trainer.policy import Policy, reference_logprobs
from verification.constants import ADVANTAGE_SCALE

APPLIED = "applied"
SKIP_NON_FINITE = "non_finite"
SKIP_CLIPPED_SHARE = "clipped_share"
SKIP_GRAD_NORM = "grad_norm"


@dataclass(frozen=True, eq=False)
class TrainingRow:
    """One verified rollout: prompt and completion token ids, the miner's per-token logprobs of the
    completion (float32, the behaviour policy's) and the rollout's GRPO advantage as a float."""

    prompt: tuple[int, ...]
    completion: tuple[int, ...]
    behaviour_logprobs: np.ndarray  # float32 [len(completion)]
    advantage: float

    def __post_init__(self):
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        object.__setattr__(self, "completion", tuple(int(t) for t in self.completion))
        lp = np.array(self.behaviour_logprobs, dtype=np.float32).reshape(-1)
        lp.setflags(write=False)
        object.__setattr__(self, "behaviour_logprobs", lp)
        object.__setattr__(self, "advantage", float(self.advantage))
        if not self.prompt or not self.completion:
            raise ValueError("a training row needs a non-empty prompt and completion")
        if lp.shape[0] != len(self.completion):
            raise ValueError(f"{lp.shape[0]} behaviour logprobs for {len(self.completion)} completion tokens")
        if not (np.all(np.isfinite(lp)) and np.all(lp <= 0.0)):
            raise ValueError("behaviour logprobs must be finite and <= 0")
        if not math.isfinite(self.advantage):
            raise ValueError("advantage must be finite")

    @classmethod
    def from_protocol(cls, prompt, completion, logprobs, advantage_micro: int) -> TrainingRow:
        """From a bundle's fields: advantages are stored as integers in micro-units."""
        return cls(prompt, completion, logprobs, int(advantage_micro) / ADVANTAGE_SCALE)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults for GRPO on a LoRA adapter (rank 16, alpha 32):

    lr 5e-5. Full-parameter GRPO uses about 1e-6 (DeepSeekMath, DAPO); the best LoRA learning rate is
      about 10x the full fine-tuning one and nearly rank-independent at fixed alpha (Schulman et al.
      2025, "LoRA Without Regret"), and small models take larger rates. Measured on SmolLM2
      (scripts/lora_lr_probe.py: one step on a fresh adapter, then the same self-sampled rows
      re-scored), mean / max |log ratio| and the share of tokens that would be clipped:
          lr 1e-5: 0.008 / 0.045, 0%     lr 5e-5: 0.042 / 0.23, 0%
          lr 2e-4: 0.17 / 0.87, 30%      lr 1e-3: 0.77 / 3.6, 58% (the clipped-share breaker trips)
      (AdamW's first steps move every parameter by about lr whatever the gradient's scale, so these
      hardly depend on the batch.) The clip range is log 0.8 .. log 1.28 = -0.22 .. +0.25, and miners
      sample with a checkpoint published windows before the trainer's current policy, so the policy
      drifts by several steps between behaviour and update: at 5e-5 a step costs a fifth of the range;
      2e-4, the usual LoRA SFT default, spends most of it in one step.
    betas (0.9, 0.999), eps 1e-8: AdamW's standard values, as in verl and TRL for GRPO.
    weight_decay 0: decay on A and B pulls the adapter towards an arbitrary point (A is random), not
      towards the base model; the KL term (kl_coef) is the principled regulariser, and it is off by
      default (DAPO and Dr. GRPO drop it for verifiable rewards).
    clip_grad_norm 1.0: the common RL value; max_grad_norm_skip 100: a norm 100x the clip means the
      batch, not the policy, is the problem; max_clipped_share 0.5: on-policy rows clip a few percent
      of tokens, half of them clipped means the rows are not from (near) this policy.
    micro_batch_size 8 rows: bounds activation memory (8 x 96 completion tokens x 49152 vocab logits
      is 150 MB for SmolLM2) without changing the result.
    temperature None: the policy's, i.e. the checkpoint's sampling temperature, at which the miners
      computed the behaviour logprobs (any other value makes every ratio wrong)."""

    lr: float = LR
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    micro_batch_size: int = 8
    clip_grad_norm: float = 1.0
    max_grad_norm_skip: float = 100.0
    max_clipped_share: float = 0.5
    eps_low: float = EPS_LOW
    eps_high: float = EPS_HIGH
    kl_coef: float = 0.0
    temperature: float | None = None

    def __post_init__(self):
        if not (self.lr > 0 and self.micro_batch_size >= 1 and self.clip_grad_norm > 0
                and self.max_grad_norm_skip > 0 and 0 <= self.max_clipped_share <= 1 and self.kl_coef >= 0
                and (self.temperature is None or self.temperature > 0)):
            raise ValueError(f"invalid training configuration: {self}")


@dataclass(frozen=True)
class StepResult:
    applied: bool
    reason: str  # "applied", or the breakers that tripped, ";"-joined: non_finite, clipped_share, grad_norm
    grad_norm: float  # global, before clipping
    clipped_share: float
    approx_kl: float
    loss: float
    n_tokens: int
    n_rows: int
    mean_ratio: float = 1.0
    mean_abs_advantage: float = 0.0


def make_optimizer(policy: Policy, config: TrainConfig = TrainConfig()) -> torch.optim.AdamW:
    """AdamW over the adapter parameters only (the base model is frozen)."""
    return torch.optim.AdamW(policy.adapter_parameters(), lr=config.lr, betas=config.betas, eps=config.adam_eps,
                             weight_decay=config.weight_decay)


def micro_batches(rows: Sequence[TrainingRow], size: int) -> list[Sequence[TrainingRow]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def count_tokens(rows: Sequence[TrainingRow]) -> int:
    return sum(len(r.completion) for r in rows)


def _accumulate(policy: Policy, forward: torch.nn.Module, rows: Sequence[TrainingRow], config: TrainConfig,
                n_tokens_total: int, loss_scale: float) -> tuple[GRPOStats, float]:
    """Forward and backward of one micro-batch; returns its stats and its share of the step's loss."""
    batch = policy.pack([r.prompt for r in rows], [r.completion for r in rows])
    c_max = batch.targets.shape[1]
    old_np = np.zeros((len(rows), c_max), dtype=np.float32)
    for i, r in enumerate(rows):
        old_np[i, :len(r.completion)] = r.behaviour_logprobs
    old = torch.from_numpy(old_np)
    adv = torch.tensor([r.advantage for r in rows], dtype=torch.float32)
    ref = reference_logprobs(policy, batch, temperature=config.temperature) if config.kl_coef > 0 else None
    new = forward(**batch.model_inputs())
    out = grpo_loss(new, old.to(new.device), adv.to(new.device), batch.completion_mask, eps_low=config.eps_low,
                    eps_high=config.eps_high, kl_coef=config.kl_coef, ref_logprobs=ref, n_tokens=n_tokens_total)
    (out.loss * loss_scale).backward()
    return out.stats, float(out.loss.detach())


def _global_grad_norm(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)


def run_step(policy: Policy, optimizer: torch.optim.Optimizer, local_rows: Sequence[TrainingRow],
             config: TrainConfig, *, forward: torch.nn.Module, n_tokens_total: int, n_rows_total: int,
             loss_scale: float = 1.0, no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
             reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> StepResult:
    """The step engine. local_rows are this process's rows, n_tokens_total the completion tokens of
    the whole step (every process), loss_scale what undoes the gradient averaging of the caller's
    all-reduce (its world size), reduce_sum a sum over processes of a float64 tensor. Every
    micro-batch but the last runs under no_sync(); every process must have at least one row."""
    if not local_rows:
        raise ValueError("a step needs at least one row per process")
    params = policy.adapter_parameters()
    was_training = policy.model.training
    optimizer.zero_grad(set_to_none=True)
    stats, loss_sum = GRPOStats(), 0.0
    try:
        policy.model.train()
        with torch.enable_grad():
            parts = micro_batches(local_rows, config.micro_batch_size)
            for k, part in enumerate(parts):
                context = no_sync() if k < len(parts) - 1 else contextlib.nullcontext()
                with context:
                    part_stats, part_loss = _accumulate(policy, forward, part, config, n_tokens_total, loss_scale)
                stats, loss_sum = stats + part_stats, loss_sum + part_loss
    finally:
        policy.model.train(was_training)

    total = reduce_sum(torch.cat([stats.to_tensor(), torch.tensor([loss_sum], dtype=torch.float64)]))
    stats, loss = GRPOStats.from_tensor(total[:-1]), float(total[-1])
    if int(stats.n_tokens) != n_tokens_total or int(stats.n_rows) != n_rows_total:
        optimizer.zero_grad(set_to_none=True)
        raise RuntimeError(f"processed {stats.n_tokens:.0f} tokens / {stats.n_rows:.0f} rows, "
                           f"expected {n_tokens_total} / {n_rows_total}")
    grad_norm = float(_global_grad_norm(params))  # after DDP's all-reduce: the same on every process

    reasons = []
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        reasons.append(SKIP_NON_FINITE)
    if stats.clipped_share > config.max_clipped_share:
        reasons.append(SKIP_CLIPPED_SHARE)
    if math.isfinite(grad_norm) and grad_norm > config.max_grad_norm_skip:
        reasons.append(SKIP_GRAD_NORM)
    if reasons:
        optimizer.zero_grad(set_to_none=True)
    else:
        torch.nn.utils.clip_grads_with_norm_(params, config.clip_grad_norm, torch.tensor(grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(
        applied=not reasons, reason=";".join(reasons) or APPLIED, grad_norm=grad_norm,
        clipped_share=stats.clipped_share, approx_kl=stats.approx_kl, loss=loss, n_tokens=n_tokens_total,
        n_rows=n_rows_total, mean_ratio=stats.mean_ratio, mean_abs_advantage=stats.mean_abs_advantage,
    )


def train_step(policy: Policy, optimizer: torch.optim.Optimizer, rows: Sequence[TrainingRow],
               config: TrainConfig = TrainConfig()) -> StepResult:
    """One optimizer step over rows in this process."""
    rows = list(rows)
    return run_step(policy, optimizer, rows, config, forward=policy.scorer(config.temperature),
                    n_tokens_total=count_tokens(rows), n_rows_total=len(rows))
