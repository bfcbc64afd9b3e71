"""How far one GRPO step on a fresh LoRA adapter moves the policy, per learning rate.

    python3 scripts/lora_lr_probe.py [--model smollm2] [--lrs 1e-5,5e-5,2e-4,1e-3] [--rows 8]

Samples `rows` completions from the model itself (so the rows are on-policy, ratio 1), gives them
+-1 advantages in groups of 4, takes one trainer step (default TrainConfig except the rate) and
re-scores the same rows: the mean and max |log ratio| and the share of tokens that would be clipped
in the next step say whether that rate keeps an update inside the clip range (1 - 0.2, 1 + 0.28).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ["What is 17 + 25?", "Name a prime number larger than 50.", "Is 91 prime? Answer yes or no.",
             "What is 12 times 7?", "Spell the word 'ratio' backwards.", "What is 100 minus 37?",
             "Give the next number: 2, 4, 8, 16, ...", "What is the capital of France?"]


def sample_rows(lm, n_rows: int, max_new_tokens: int, seed: int = 0):
    import numpy as np
    import torch

    from trainer.step import TrainingRow

    torch.manual_seed(seed)
    rows = []
    for i in range(n_rows):
        prompt = lm.chat_prompt_ids(QUESTIONS[i % len(QUESTIONS)])
        ids = torch.tensor([prompt])
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=lm.temperature,
                                top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                pad_token_id=lm.tokenizer.pad_token_id or min(lm.eos_ids))
        completion = out[0, len(prompt):].tolist()
        (_, logp), = lm.teacher_forced(prompt, [np.array(completion)])
        behaviour = logp[np.arange(len(completion)), completion]
        rows.append(TrainingRow(prompt, completion, behaviour, 1.0 if (i // 2) % 2 == 0 else -1.0))
    return rows


def probe(lm, rows, lr: float) -> dict:
    import torch

    from trainer.loss import EPS_HIGH, EPS_LOW
    from trainer.policy import completion_logprobs, make_policy
    from trainer.step import TrainConfig, make_optimizer, train_step

    policy = make_policy(lm)
    config = TrainConfig(lr=lr, micro_batch_size=4)
    result = train_step(policy, make_optimizer(policy, config), rows, config)
    with torch.no_grad():
        new, mask = completion_logprobs(policy, [r.prompt for r in rows], [r.completion for r in rows])
    old = torch.zeros_like(new)
    adv = torch.tensor([r.advantage for r in rows]).unsqueeze(1).expand_as(new)
    for i, r in enumerate(rows):
        old[i, :len(r.completion)] = torch.from_numpy(r.behaviour_logprobs.copy())
    log_ratio = (new - old)[mask]
    ratio = log_ratio.exp()
    a = adv[mask]
    clipped = ((a > 0) & (ratio > 1 + EPS_HIGH)) | ((a < 0) & (ratio < 1 - EPS_LOW))
    return {"lr": lr, "applied": result.applied, "grad_norm": result.grad_norm,
            "mean_abs_log_ratio": float(log_ratio.abs().mean()), "max_abs_log_ratio": float(log_ratio.abs().max()),
            "next_clipped_share": float(clipped.double().mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lrs", default="1e-5,5e-5,2e-4,1e-3")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    from verification.model import load_model

    lm = load_model(args.model)
    rows = sample_rows(lm, args.rows, args.max_new_tokens)
    print(f"{args.model}: {len(rows)} rows, {sum(len(r.completion) for r in rows)} completion tokens")
    print(f"{'lr':>8} {'grad norm':>10} {'mean|log r|':>12} {'max|log r|':>11} {'clipped next':>13}")
    for lr in (float(x) for x in args.lrs.split(",")):
        p = probe(lm, rows, lr)
        print(f"{p['lr']:>8.0e} {p['grad_norm']:>10.3f} {p['mean_abs_log_ratio']:>12.4f} "
              f"{p['max_abs_log_ratio']:>11.3f} {p['next_clipped_share']:>12.1%}")


if __name__ == "__main__":
    main()
