"""The trainable policy: the agreed base model with a peft LoRA adapter, and the per-token
logprobs of completion tokens under it.

The base model is a Llama-shaped Hugging Face causal LM held by a `verification.model.LoadedModel`
(the PRF-seeded tiny model or SmolLM2-135M). Only the adapter is trainable. Its initialisation is
drawn from a private generator seeded by `LoraSettings.init_seed`, so two trainers with the same
settings start bit-identical and the global torch RNG is left untouched. peft initialises B to zero,
so an untrained adapter computes exactly the base model.

Logprobs follow the protocol's definition (`verification.model.teacher_forced`): right-padded rows,
position ids from the attention mask, logprob of token t = log_softmax(logits / T)[t] at the
position that predicted it. Only completion positions go through the output head, so memory is
O(rows x completion length x vocab), not O(rows x full length x vocab).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from verification.model import LoadedModel, position_ids_from_mask

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_NAME = "default"  # peft's adapter slot; it never appears in saved tensor names


@dataclass(frozen=True)
class LoraSettings:
    """rank 16 / alpha 32 (scale alpha/rank = 2). Rank 16 is far above what RL needs (about one
    bit of reward per rollout; rank-1 adapters already match full fine-tuning in RL: Schulman et al.
    2025, "LoRA Without Regret") and keeps the adapter small: 19.6 MB against 538 MB of float32
    SmolLM2 (3.6%; scripts/checkpoint_bytes.py). alpha 32 with peft's alpha/rank scale is the setting
    under which that study found the best learning rate nearly independent of rank: change the rank,
    keep alpha. All seven projections are adapted (attention and MLP): adapters on attention alone
    train markedly worse in the same study. Dropout 0: RL updates are already noisy, and dropout would
    make the new policy's logprobs differ from the behaviour policy's even before any update."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_TARGETS
    init_seed: int = 0

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules or len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"target_modules must be distinct and non-empty, got {self.target_modules!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": float(self.alpha), "dropout": float(self.dropout),
                "target_modules": list(self.target_modules), "init_seed": self.init_seed}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSettings:
        known = {"rank", "alpha", "dropout", "target_modules", "init_seed"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LoRA settings: {sorted(unknown)}")
        return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)),
                   target_modules=tuple(d.get("target_modules", LORA_TARGETS)),
                   init_seed=int(d.get("init_seed", 0)))


@dataclass(frozen=True)
class PackedBatch:
    """A right-padded batch of (prompt, completion) rows, ready for `CompletionScorer`.

    gather_index[i, j] is the position whose output predicts completion token j of row i;
    targets[i, j] that token; completion_mask[i, j] whether j < len(completion_i)."""

    input_ids: torch.Tensor  # long [B, L]
    attention_mask: torch.Tensor  # long [B, L]
    position_ids: torch.Tensor  # long [B, L]
    gather_index: torch.Tensor  # long [B, C]
    targets: torch.Tensor  # long [B, C]
    completion_mask: torch.Tensor  # bool [B, C]

    def to(self, device) -> PackedBatch:
        return PackedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                                    self.gather_index, self.targets, self.completion_mask)))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "gather_index": self.gather_index, "targets": self.targets}


def pack_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, pad_id: int,
               vocab_size: int) -> PackedBatch:
    if len(prompts) != len(completions) or not prompts:
        raise ValueError("need the same, non-zero number of prompts and completions")
    rows = []
    for p, c in zip(prompts, completions):
        p, c = [int(t) for t in p], [int(t) for t in c]
        if not p or not c:
            raise ValueError("every row needs a non-empty prompt and completion")
        if min(p + c) < 0 or max(p + c) >= vocab_size:
            raise ValueError(f"token id outside the vocabulary [0, {vocab_size})")
        rows.append((p, c))
    b = len(rows)
    width = max(len(p) + len(c) for p, c in rows)
    c_max = max(len(c) for _, c in rows)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    gather_index = torch.zeros((b, c_max), dtype=torch.long)
    targets = torch.zeros((b, c_max), dtype=torch.long)
    completion_mask = torch.zeros((b, c_max), dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c, dtype=torch.long)
        attention_mask[i, :n] = 1
        gather_index[i, :len(c)] = torch.arange(len(p) - 1, n - 1)
        targets[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[i, :len(c)] = True
    return PackedBatch(input_ids, attention_mask, position_ids_from_mask(attention_mask),
                       gather_index, targets, completion_mask)


class CompletionScorer(torch.nn.Module):
    """nn.Module whose forward returns completion-token logprobs [B, C] (entries past a row's end
    are the logprobs of token 0 at padding positions: mask them with PackedBatch.completion_mask).

    A module of its own so that DistributedDataParallel can wrap exactly the computation whose
    backward it has to synchronise; its parameters are the peft model's."""

    def __init__(self, peft_model: torch.nn.Module, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.peft_model = peft_model
        self.temperature = float(temperature)

    def forward(self, input_ids, attention_mask, position_ids, gather_index, targets):
        causal_lm = self.peft_model.get_base_model()  # the HF model, with the LoRA layers injected
        out = causal_lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state
        picked = torch.gather(hidden, 1, gather_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = causal_lm.get_output_embeddings()(picked).float()
        logp = torch.log_softmax(logits / self.temperature, dim=-1)
        return torch.gather(logp, 2, targets.unsqueeze(-1)).squeeze(-1)


class Policy:
    """The peft-wrapped model plus what the trainer needs to feed it."""

    def __init__(self, peft_model: torch.nn.Module, settings: LoraSettings, *, pad_id: int, vocab_size: int,
                 temperature: float, device: str = "cpu"):
        self.model = peft_model
        self.settings = settings
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size)
        self.temperature = float(temperature)  # the checkpoint's sampling temperature
        self.device = device

    def named_adapter_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def adapter_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_adapter_parameters()]

    def scorer(self, temperature: float | None = None) -> CompletionScorer:
        return CompletionScorer(self.model, self.temperature if temperature is None else temperature)

    def pack(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> PackedBatch:
        return pack_batch(prompts, completions, pad_id=self.pad_id, vocab_size=self.vocab_size).to(self.device)


def make_policy(lm: LoadedModel, settings: LoraSettings = LoraSettings(), *, copy_base: bool = True) -> Policy:
    """Wrap lm's model with a fresh LoRA adapter. peft injects its layers into the model it wraps, so
    by default the base model is deep-copied and lm stays usable (by a verifier, say) as it was."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(lm.model) if copy_base else lm.model
    for p in base.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none", init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.init_seed)
        model = get_peft_model(base, config, adapter_name=ADAPTER_NAME)
    model.to(lm.device).eval()
    found = {n.rsplit(".", 1)[-1] for n, m in model.get_base_model().named_modules() if hasattr(m, "lora_A")}
    missing = set(settings.target_modules) - found
    if missing:
        raise ValueError(f"the model has no modules named {sorted(missing)}")
    pad = lm.tokenizer.pad_token_id
    pad_id = int(pad) if pad is not None else min(lm.eos_ids)
    return Policy(model, settings, pad_id=pad_id, vocab_size=lm.vocab_size, temperature=lm.temperature,
                  device=lm.device)


def completion_logprobs(policy: Policy, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        *, temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs [B, C] (float32, differentiable w.r.t. the adapter) of each completion
    given its prompt, log_softmax(logits / T) at the completion tokens, and the bool mask [B, C] of
    real tokens (logprobs are 0 past a row's end). Row i is (prompts[i], completions[i]); T defaults
    to the policy's (the checkpoint's). Loading a model through verification.model disables autograd
    globally: build the loss from these under torch.enable_grad()."""
    batch = policy.pack(prompts, completions)
    with torch.enable_grad():
        logp = policy.scorer(temperature)(**batch.model_inputs())
        logp = torch.where(batch.completion_mask, logp, torch.zeros_like(logp))
    return logp, batch.completion_mask


def reference_logprobs(policy: Policy, batch: PackedBatch, *, temperature: float | None = None) -> torch.Tensor:
    """Logprobs [B, C] of the base model (adapter disabled), without gradients: the KL reference."""
    with torch.no_grad(), policy.model.disable_adapter():
        return policy.scorer(temperature)(**batch.model_inputs())
