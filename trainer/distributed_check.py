"""Run training steps on the tiny model over fixed rows and write the resulting adapter, so that a
torchrun run can be compared with a 1-process run:

    torchrun --standalone --nproc_per_node=2 -m trainer.distributed_check --out DIR   # DDP, 2 ranks
    python3 -m trainer.distributed_check --out DIR                                   # 1 process

Writes, from rank 0, DIR/adapter_{sgd,adamw}.safetensors and DIR/results.json ({optimizer: [StepResult
as a dict, per step]}). tests/test_trainer_distributed.py compares the two runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from verification.grpo import advantages
from verification.model import LoadedModel
from verification.prf import prf

CHECK_CONFIG = {"micro_batch_size": 2}  # 12 rows: 6 micro-batches in 1 process, 3 per rank on 2 ranks
SGD_LR = 0.01
OPTIMIZERS = ("sgd", "adamw")


def fixed_rows(lm: LoadedModel, n_groups: int = 3, group_size: int = 4, seed: int = 0):
    """Deterministic rows: PRF-drawn prompts and completions of uneven lengths, behaviour logprobs =
    the base model's teacher-forced logprobs plus a small PRF perturbation (so ratios differ from 1
    and some tokens clip), advantages from the protocol's GRPO rule over PRF-drawn rewards."""
    from trainer.step import TrainingRow

    rows = []
    for g in range(n_groups):
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(prf("trainer-check", seed, g)[:16], "big")))
        prompt = rng.integers(0, 256, size=int(rng.integers(4, 16))).tolist()
        completions = [rng.integers(0, 256, size=int(rng.integers(2, 24))).astype(np.int64) for _ in range(group_size)]
        rewards = [int(r) for r in rng.integers(0, 10**6, size=group_size)]
        adv = advantages(rewards)
        forced = lm.teacher_forced(prompt, completions)
        for c, (_, logp), a in zip(completions, forced, adv):
            base = logp[np.arange(len(c)), c]
            noise = rng.normal(0.0, 0.1, size=len(c)).astype(np.float32)
            rows.append(TrainingRow.from_protocol(prompt, c.tolist(), np.minimum(base + noise, 0.0), a))
    return rows


def train_fixed(lm: LoadedModel, optimizer_kind: str, steps: int) -> tuple[dict, list[dict]]:
    """Fresh policy, `steps` steps over fixed_rows(lm); returns (adapter tensors, StepResults as dicts).
    Under torchrun (WORLD_SIZE > 1, process group initialised) the steps are distributed ones.

    optimizer_kind "adamw" is the trainer's optimizer; "sgd" (plain, lr SGD_LR) makes the weight change
    proportional to the all-reduced, clipped gradient, so comparing weights compares gradients."""
    import torch

    from trainer.adapter_files import adapter_tensors
    from trainer.policy import make_policy
    from trainer.step import TrainConfig, make_optimizer, train_step

    rows = fixed_rows(lm)
    policy = make_policy(lm)
    config = TrainConfig(**CHECK_CONFIG)
    if optimizer_kind == "adamw":
        optimizer = make_optimizer(policy, config)
    elif optimizer_kind == "sgd":
        optimizer = torch.optim.SGD(policy.adapter_parameters(), lr=SGD_LR)
    else:
        raise ValueError(f"unknown optimizer {optimizer_kind!r}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from trainer.distributed import distributed_train_step, wrap_policy

        ddp = wrap_policy(policy, config)
        results = [distributed_train_step(policy, ddp, optimizer, rows, config) for _ in range(steps)]
    else:
        results = [train_step(policy, optimizer, rows, config) for _ in range(steps)]
    return adapter_tensors(policy), [dataclasses.asdict(r) for r in results]


def run(out: Path, steps: int = 2) -> None:
    from trainer.adapter_files import save_adapter
    from trainer.policy import LoraSettings
    from verification.model import load_model

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        import torch.distributed as dist

        from trainer.distributed import init_from_env

        rank, _ = init_from_env("gloo")
    lm = load_model("tiny")
    report = {}
    for kind in OPTIMIZERS:
        tensors, results = train_fixed(lm, kind, steps)
        report[kind] = results
        if rank == 0:
            save_adapter(out / f"adapter_{kind}.safetensors", tensors, LoraSettings().to_dict())
    if rank == 0:
        (out / "results.json").write_text(json.dumps(report, indent=1))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    run(args.out, args.steps)


if __name__ == "__main__":
    main()
