"""AdamW state as a file, so a checkpoint carries the optimizer state its successor's steps start
from (docs/protocol.md section 16).

One safetensors file: for each adapter parameter (canonical names, trainer/adapter_files.py) with
state, float32 tensors "<name>.exp_avg", "<name>.exp_avg_sq" and "<name>.step" (shape [1]); one
metadata key holding canonical JSON {"format": OPTIMIZER_FORMAT}. The hyperparameters are not in
the file: the training record states them. Same state gives the same bytes."""

from __future__ import annotations

import json

import torch

from trainer.adapter_files import _canonical_name
from trainer.policy import Policy
from verification.canonical import canonical_json
from verification.errors import TrainingRecordError

OPTIMIZER_FORMAT = "rollproof-adamw/1"
METADATA_KEY = "rollproof_optimizer"
_PARTS = ("exp_avg", "exp_avg_sq", "step")


def _names(policy: Policy) -> list[str]:
    return [_canonical_name(n) for n, _ in policy.named_adapter_parameters()]


def optimizer_tensors(policy: Policy, state_dict: dict) -> dict[str, torch.Tensor]:
    """AdamW's state_dict as {"<name>.<part>": float32 tensor} under the policy's canonical names."""
    names = _names(policy)
    out = {}
    for idx, st in state_dict["state"].items():
        name = names[int(idx)]
        for part in _PARTS:
            value = st[part]
            t = (value if isinstance(value, torch.Tensor) else torch.tensor(float(value))).detach().to("cpu", torch.float32)
            out[f"{name}.{part}"] = (t.reshape(1) if part == "step" else t).contiguous().clone()
    return dict(sorted(out.items()))


def optimizer_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: tensors[k] for k in sorted(tensors)},
                metadata={METADATA_KEY: canonical_json({"format": OPTIMIZER_FORMAT}).decode()})


def optimizer_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads((header.get("__metadata__") or {}).get(METADATA_KEY, "{}"))
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own errors on malformed bytes
        raise TrainingRecordError(f"the optimizer file does not decode: {exc}") from None
    if meta.get("format") != OPTIMIZER_FORMAT:
        raise TrainingRecordError(f"the optimizer file is not {OPTIMIZER_FORMAT}")
    for k, t in tensors.items():
        if t.dtype != torch.float32 or not torch.isfinite(t).all():
            raise TrainingRecordError(f"optimizer tensor {k!r} must be finite float32")
    return tensors


def load_optimizer_state(policy: Policy, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put the file's state into a fresh optimizer over policy.adapter_parameters()."""
    names = _names(policy)
    params = dict(zip(names, policy.adapter_parameters()))
    state = {}
    seen = set()
    for idx, name in enumerate(names):
        parts = {p: tensors.get(f"{name}.{p}") for p in _PARTS}
        if all(v is None for v in parts.values()):
            continue
        if any(v is None for v in parts.values()):
            raise TrainingRecordError(f"the optimizer file lacks part of {name!r}'s state")
        if (parts["exp_avg"].shape != params[name].shape or parts["exp_avg_sq"].shape != params[name].shape
                or parts["step"].numel() != 1):
            raise TrainingRecordError(f"the optimizer state of {name!r} has the wrong shape")
        state[idx] = {"step": parts["step"].reshape(()).clone(), "exp_avg": parts["exp_avg"].clone(),
                      "exp_avg_sq": parts["exp_avg_sq"].clone()}
        seen.update(f"{name}.{p}" for p in _PARTS)
    unknown = set(tensors) - seen
    if unknown:
        raise TrainingRecordError(f"the optimizer file names unknown tensors: {sorted(unknown)[:3]}")
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
