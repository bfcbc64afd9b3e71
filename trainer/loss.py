"""The GRPO objective over a padded batch of completion tokens.

Per real token t of row i, with advantage A_i and behaviour logprob old_t (the miner's verified one):
    r_t   = exp(new_t - old_t)
    obj_t = min(r_t * A_i, clip(r_t, 1 - eps_low, 1 + eps_high) * A_i)          (PPO clip, DAPO clip-higher)
    kl_t  = exp(ref_t - new_t) - (ref_t - new_t) - 1                            (k3 estimator of KL(new||ref))
    loss  = sum_t(-obj_t + kl_coef * kl_t) / n_tokens                           (DAPO token-level mean)
n_tokens defaults to the batch's real-token count; a caller that accumulates micro-batches (or
shards over ranks) passes the count of the whole step so the sum of the parts is the whole loss.

obj_t is written as where(clipped_t, bound * A_i, r_t * A_i) with clipped_t = (A_i > 0 and r_t > 1 +
eps_high) or (A_i < 0 and r_t < 1 - eps_low), which is the same value as the min above but gives a
clipped token exactly zero gradient even where rounding makes the two products tie. Log-ratios are
clamped to +-LOG_RATIO_CLAMP before exp (as verl does) so no ratio overflows to inf and 0 * inf
never yields NaN; a token that far off-policy is a data problem for the step's circuit breakers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

EPS_LOW = 0.2
EPS_HIGH = 0.28
LOG_RATIO_CLAMP = 20.0


@dataclass(frozen=True)
class GRPOStats:
    """Sums over a batch (so parts of a step add up, across micro-batches and ranks), with the
    means the trainer reports as properties. mean |advantage| is per rollout."""

    n_tokens: float = 0.0
    n_clipped: float = 0.0
    ratio_sum: float = 0.0
    approx_kl_sum: float = 0.0  # sum of (r - 1) - log r, the k3 estimate of KL(behaviour || new)
    n_rows: float = 0.0
    abs_advantage_sum: float = 0.0

    def __add__(self, other: GRPOStats) -> GRPOStats:
        return GRPOStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> GRPOStats:
        return cls(*(float(v) for v in t.tolist()))

    @staticmethod
    def _mean(num: float, den: float) -> float:
        return num / den if den else 0.0

    @property
    def clipped_share(self) -> float:
        return self._mean(self.n_clipped, self.n_tokens)

    @property
    def approx_kl(self) -> float:
        return self._mean(self.approx_kl_sum, self.n_tokens)

    @property
    def mean_ratio(self) -> float:
        return self._mean(self.ratio_sum, self.n_tokens)

    @property
    def mean_abs_advantage(self) -> float:
        return self._mean(self.abs_advantage_sum, self.n_rows)


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable: policy_loss + kl_coef * kl
    policy_loss: torch.Tensor  # scalar, -sum(obj) / n_tokens (detached)
    kl: torch.Tensor  # scalar, sum(k3 to the reference) / n_tokens (detached; 0 without a reference)
    stats: GRPOStats


def grpo_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, *, eps_low: float = EPS_LOW, eps_high: float = EPS_HIGH,
              kl_coef: float = 0.0, ref_logprobs: torch.Tensor | None = None,
              n_tokens: float | None = None) -> LossOutput:
    """new/old/ref logprobs and mask are [B, C]; advantages [B] (floats, not micro-units)."""
    if new_logprobs.shape != old_logprobs.shape or new_logprobs.shape != mask.shape or new_logprobs.dim() != 2:
        raise ValueError("new_logprobs, old_logprobs and mask must share one [B, C] shape")
    if advantages.shape != new_logprobs.shape[:1]:
        raise ValueError("advantages must be [B]")
    if not (0 <= eps_low < 1 and eps_high >= 0):
        raise ValueError("need 0 <= eps_low < 1 and eps_high >= 0")
    if kl_coef < 0:
        raise ValueError("kl_coef must be non-negative")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    mask = mask.bool()
    count = float(mask.sum())
    n_tokens = count if n_tokens is None else float(n_tokens)
    if n_tokens <= 0:
        raise ValueError("the loss needs at least one completion token")

    adv = advantages.to(new_logprobs.dtype).unsqueeze(1).expand_as(new_logprobs)
    log_ratio = torch.clamp(new_logprobs - old_logprobs.to(new_logprobs.dtype), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    high = (adv > 0) & (ratio > 1.0 + eps_high)
    low = (adv < 0) & (ratio < 1.0 - eps_low)
    clipped = (high | low) & mask
    bound = torch.where(high, torch.full_like(ratio, 1.0 + eps_high), torch.full_like(ratio, 1.0 - eps_low))
    objective = torch.where(clipped, bound * adv, ratio * adv)
    zero = torch.zeros_like(objective)
    policy_sum = -torch.where(mask, objective, zero).sum()

    if ref_logprobs is not None:
        d = torch.clamp(ref_logprobs.to(new_logprobs.dtype) - new_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl_sum = torch.where(mask, torch.exp(d) - d - 1.0, zero).sum()
    else:
        kl_sum = zero.sum()
    loss = (policy_sum + kl_coef * kl_sum) / n_tokens if kl_coef else policy_sum / n_tokens

    with torch.no_grad():
        r, lr = ratio[mask], log_ratio[mask]
        stats = GRPOStats(
            n_tokens=count, n_clipped=float(clipped.sum()), ratio_sum=float(r.double().sum()),
            approx_kl_sum=float(((r - 1.0) - lr).double().sum()), n_rows=float(advantages.numel()),
            abs_advantage_sum=float(advantages.double().abs().sum()),
        )
    return LossOutput(loss=loss, policy_loss=(policy_sum / n_tokens).detach(), kl=(kl_sum / n_tokens).detach(),
                      stats=stats)
