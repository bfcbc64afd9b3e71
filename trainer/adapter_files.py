"""LoRA adapter files and the deterministic merge into the base weights.

File format: one safetensors file. Tensors are float32, contiguous, named after the base model's
module they adapt: "<module path>.lora_A.weight" [rank, in] and "<module path>.lora_B.weight"
[out, rank], e.g. "model.layers.0.self_attn.q_proj.lora_A.weight" (no peft wrapper prefix, no
adapter slot name). The header metadata has one key, METADATA_KEY, whose value is the canonical JSON
of {"format": ADAPTER_FORMAT, "config": LoraSettings.to_dict()}: one key, because safetensors writes
metadata keys in hash-map order, which varies between processes. Same tensors and config give the
same bytes.

merge_adapter computes W' = W + (B @ A) * (alpha / rank) for each adapted Linear, in float32 on
CPU, as a fixed sequence of elementwise IEEE operations (one rank-1 outer product added at a time,
k = 0 .. rank-1, then one multiply by the scale, then one add to W). Elementwise float32 multiply and
add are correctly rounded, so the merged tensors are bit-identical on every machine, thread count
and BLAS, which a matmul's blocked reductions do not guarantee; the merged model's fingerprint is
therefore reproducible by anyone holding the base model and the adapter.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from pathlib import Path

import torch

from trainer.policy import ADAPTER_NAME, LoraSettings, Policy
from verification.checkpoint_model import lora_delta  # the protocol's merge: one definition
from verification.canonical import canonical_json

ADAPTER_FORMAT = "rollproof-lora/1"
METADATA_KEY = "rollproof_lora"
_PEFT_PREFIX = "base_model.model."
_NAME = re.compile(r"^(?P<module>[A-Za-z0-9_.]+)\.lora_(?P<part>[AB])\.weight$")


def _canonical_name(peft_name: str) -> str:
    """'base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight'
    -> 'model.layers.0.self_attn.q_proj.lora_A.weight'."""
    if not peft_name.startswith(_PEFT_PREFIX):
        raise ValueError(f"unexpected adapter parameter name {peft_name!r}")
    name = peft_name[len(_PEFT_PREFIX):].replace(f".{ADAPTER_NAME}.", ".")
    if not _NAME.match(name):
        raise ValueError(f"unexpected adapter parameter name {peft_name!r}")
    return name


def _parameter_map(policy: Policy) -> dict[str, torch.nn.Parameter]:
    return {_canonical_name(n): p for n, p in policy.named_adapter_parameters()}


def adapter_tensors(policy: Policy) -> dict[str, torch.Tensor]:
    """The policy's adapter under canonical names: float32, contiguous CPU copies."""
    return {name: p.detach().to("cpu", torch.float32).contiguous().clone()
            for name, p in sorted(_parameter_map(policy).items())}


def adapter_config(policy_or_settings: Policy | LoraSettings) -> dict:
    settings = policy_or_settings.settings if isinstance(policy_or_settings, Policy) else policy_or_settings
    return settings.to_dict()


def validate_adapter(tensors: dict[str, torch.Tensor], config: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Check names, dtypes and shapes against config; return {module path: (A, B)}."""
    settings = LoraSettings.from_dict(config)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        m = _NAME.match(name)
        if not m or name.startswith(_PEFT_PREFIX):
            raise ValueError(f"non-canonical adapter tensor name {name!r}")
        if m["module"].rsplit(".", 1)[-1] not in settings.target_modules:
            raise ValueError(f"{name!r} adapts a module outside target_modules")
        if t.dtype != torch.float32 or t.dim() != 2:
            raise ValueError(f"{name!r} must be a 2-D float32 tensor, got {t.dtype} {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name!r} has non-finite values")
        pairs.setdefault(m["module"], {})[m["part"]] = t
    out = {}
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise ValueError(f"{module!r} lacks lora_A or lora_B")
        a, b = parts["A"], parts["B"]
        if a.shape[0] != settings.rank or b.shape[1] != settings.rank:
            raise ValueError(f"{module!r}: shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not match rank {settings.rank}")
        out[module] = (a, b)
    if not out:
        raise ValueError("the adapter has no tensors")
    return out


def adapter_to_bytes(tensors: dict[str, torch.Tensor], config: dict) -> bytes:
    from safetensors.torch import save

    validate_adapter(tensors, config)
    clean = {k: tensors[k].detach().to("cpu", torch.float32).contiguous() for k in sorted(tensors)}
    header = {"format": ADAPTER_FORMAT, "config": LoraSettings.from_dict(config).to_dict()}
    return save(clean, metadata={METADATA_KEY: canonical_json(header).decode()})


def adapter_from_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if header_len <= 0 or 8 + header_len > len(data):
        raise ValueError("not a safetensors file")
    try:
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        header = json.loads(metadata.get(METADATA_KEY, "{}"))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable adapter header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"not a {ADAPTER_FORMAT} adapter")
    config = LoraSettings.from_dict(header["config"]).to_dict()
    tensors = load(data)
    validate_adapter(tensors, config)
    return tensors, config


def save_adapter(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> int:
    """Write atomically (temp file, fsync, rename); returns the file size in bytes."""
    data = adapter_to_bytes(tensors, config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(data)


def load_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    return adapter_from_bytes(Path(path).read_bytes())


def load_adapter_into(policy: Policy, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """Copy an adapter into the policy's (which must have the same settings and tensor set)."""
    validate_adapter(tensors, config)
    if LoraSettings.from_dict(config).to_dict() | {"init_seed": 0} != policy.settings.to_dict() | {"init_seed": 0}:
        raise ValueError("adapter config does not match the policy's LoRA settings")
    params = _parameter_map(policy)
    if set(params) != set(tensors):
        raise ValueError(f"adapter tensors differ from the policy's: {sorted(set(params) ^ set(tensors))[:4]}")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != tensors[name].shape:
                raise ValueError(f"{name!r}: shape {tuple(tensors[name].shape)}, policy has {tuple(p.shape)}")
            p.copy_(tensors[name].to(p.device, p.dtype))


def merge_adapter(base_model: torch.nn.Module, adapter_tensors: dict[str, torch.Tensor], config: dict, *,
                  copy_model: bool = True) -> torch.nn.Module:
    """The base model with the adapter folded into its weights: a plain HF model (no peft), float32,
    on CPU, in eval mode. base_model is left untouched unless copy_model=False."""
    pairs = validate_adapter(adapter_tensors, config)
    settings = LoraSettings.from_dict(config)
    model = copy.deepcopy(base_model) if copy_model else base_model
    model = model.to("cpu")
    with torch.no_grad():
        for module_path, (a, b) in pairs.items():
            try:
                module = model.get_submodule(module_path)
            except AttributeError as exc:
                raise ValueError(f"the base model has no module {module_path!r}") from exc
            if not isinstance(module, torch.nn.Linear) or module.weight.dtype != torch.float32:
                raise ValueError(f"{module_path!r} is not a float32 Linear layer")
            w = module.weight
            if tuple(w.shape) != (b.shape[0], a.shape[1]):
                raise ValueError(f"{module_path!r}: weight {tuple(w.shape)} vs adapter {b.shape[0]}x{a.shape[1]}")
            w.copy_(torch.add(w.detach(), lora_delta(a, b, settings.scaling)))
    return model.eval()
