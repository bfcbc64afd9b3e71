"""The trainer's numerical core: turns verified rollouts into the next checkpoint.

policy.py         the agreed base model with a LoRA adapter; per-token completion logprobs
loss.py           the GRPO objective (clipped importance ratio, token-level mean, optional KL)
step.py           one optimizer step with gradient accumulation and circuit breakers
distributed.py    the same step under torchrun (gloo, DDP, rows sharded by rank)
adapter_files.py  adapter safetensors I/O and the deterministic merge into the base weights

Imports only `verification` (and torch, transformers, peft, safetensors)."""
