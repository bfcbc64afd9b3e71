"""The training step under torchrun: torch.distributed (gloo on CPU), DDP over the policy's scorer,
rows sharded by rank.

Every rank is given the same full list of rows (the trainer reads the same verified rollouts) and
takes rows[rank::world_size]. Gradients are all-reduced by DDP, once per step: every micro-batch
but the last runs under DDP's no_sync(). DDP averages gradients over ranks, so each rank scales its
loss by world_size and normalises by the token count of the whole step: the all-reduced gradient is
then that of sum(token objectives of all rows) / (all tokens), the 1-process loss. The statistics
(token and clip counts, loss) are summed with one all_reduce of a small float64 vector, so every
rank takes the same breaker decision and returns the same StepResult.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.policy import Policy
from trainer.step import StepResult, TrainConfig, TrainingRow, count_tokens, run_step


def init_from_env(backend: str = "gloo") -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
    returns (rank, world_size)."""
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("not started by torchrun (RANK / WORLD_SIZE unset)")
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def wrap_policy(policy: Policy, config: TrainConfig | None = None) -> DistributedDataParallel:
    """DDP over the policy's completion scorer (its trainable parameters are the adapter's). DDP
    broadcasts rank 0's parameters at construction; build it once and reuse it for every step."""
    if not dist.is_initialized():
        raise RuntimeError("init the process group first (init_from_env)")
    config = config or TrainConfig()
    # buffers (the rotary frequencies) are identical on every rank; DDP's default re-broadcast of them
    # costs a few hundred bytes per forward and needs no version-specific option
    return DistributedDataParallel(policy.scorer(config.temperature), find_unused_parameters=False)


def shard_rows(rows: Sequence[TrainingRow], rank: int, world_size: int) -> list[TrainingRow]:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    return list(rows[rank::world_size])


def rows_digest(rows: Sequence[TrainingRow]) -> bytes:
    h = hashlib.sha256()
    for r in rows:
        h.update(len(r.prompt).to_bytes(4, "little") + len(r.completion).to_bytes(4, "little"))
        h.update(torch.tensor(r.prompt + r.completion, dtype=torch.int64).numpy().tobytes())
        h.update(r.behaviour_logprobs.tobytes())
        h.update(repr(r.advantage).encode())
    return h.digest()


def _check_same_rows(rows: Sequence[TrainingRow], world_size: int) -> None:
    digests = [None] * world_size
    dist.all_gather_object(digests, rows_digest(rows))
    if len(set(digests)) != 1:
        raise RuntimeError("ranks were given different rows")


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def distributed_train_step(policy: Policy, ddp: DistributedDataParallel, optimizer: torch.optim.Optimizer,
                           rows: Sequence[TrainingRow], config: TrainConfig | None = None, *,
                           check_rows: bool = True) -> StepResult:
    """One step over all rows, this rank running its shard. Call on every rank with the same rows,
    the same config and an optimizer over policy.adapter_parameters()."""
    config = config or TrainConfig()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    rows = list(rows)
    if len(rows) < world_size:
        raise ValueError(f"{len(rows)} rows cannot be sharded over {world_size} ranks")
    if check_rows:
        _check_same_rows(rows, world_size)
    temperature = policy.temperature if config.temperature is None else config.temperature
    if ddp.module.temperature != temperature:
        raise ValueError("the DDP scorer was built for another temperature")
    return run_step(policy, optimizer, shard_rows(rows, rank, world_size), config, forward=ddp,
                    n_tokens_total=count_tokens(rows), n_rows_total=len(rows), loss_scale=float(world_size),
                    no_sync=ddp.no_sync, reduce_sum=_all_reduce_sum)
