"""Turning a verified checkpoint into a model (needs torch): check every file against its manifest,
recompute the weights root and fingerprint, merge the LoRA adapter into the base weights.

Adapter tensor names (safetensors, float32): for every adapted linear module at HF module path P
(e.g. "model.layers.0.self_attn.q_proj"), "P.lora_A.weight" of shape [rank, in] and
"P.lora_B.weight" of shape [out, rank]. Merged weight: W_P + lora_delta(A, B, alpha / rank) in float32, where lora_delta
accumulates the rank-1 products B[:, k] * A[k, :] for k = 0..rank-1 elementwise in that order and
then multiplies by the float32 scale: fixed IEEE operations, so every machine gets the same bits
(a BLAS matmul may not)."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch

from verification.checkpoint import Manifest, lora_weights_root
from verification.errors import CheckpointError, CheckpointInvalidError, CheckpointUnavailableError
from verification.fingerprint import tensors_root
from verification.model import LoadedModel

ADAPTER_FILE = "adapter.safetensors"


def check_file(manifest: Manifest, name: str, data: bytes) -> None:
    """CheckpointUnavailableError unless data are the file's bytes the manifest states (bytes that
    differ are what this node was served, not what the chain binds: docs/protocol.md section 15)."""
    f = manifest.file(name)
    if len(data) != f.size:
        raise CheckpointUnavailableError(f"checkpoint file {name} is {len(data)} bytes, the manifest says {f.size}")
    if hashlib.sha256(data).hexdigest() != f.sha256:
        raise CheckpointUnavailableError(f"checkpoint file {name} does not hash to the manifest's SHA-256")


def decode_adapter(data: bytes, manifest: Manifest, base: LoadedModel) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"adapter file is not safetensors: {exc}") from None
    rank, targets = manifest.adapter["rank"], set(manifest.adapter["target_modules"])
    modules = dict(base.model.named_modules())
    paths = set()
    for name, arr in tensors.items():
        stem, _, weight = name.rpartition(".")
        path, _, part = stem.rpartition(".")
        if weight != "weight" or part not in ("lora_A", "lora_B") or arr.dtype != np.float32:
            raise CheckpointError(f"adapter tensor {name!r} is not a float32 lora_A/lora_B")
        module = modules.get(path)
        if not isinstance(module, torch.nn.Linear) or path.rsplit(".", 1)[-1] not in targets:
            raise CheckpointError(f"adapter tensor {name!r} names no targeted linear module")
        out_f, in_f = module.weight.shape
        want = (rank, in_f) if part == "lora_A" else (out_f, rank)
        if tuple(arr.shape) != want:
            raise CheckpointError(f"adapter tensor {name!r} has shape {arr.shape}, expected {want}")
        paths.add(path)
    for path in paths:
        if f"{path}.lora_A.weight" not in tensors or f"{path}.lora_B.weight" not in tensors:
            raise CheckpointError(f"adapter for {path} lacks lora_A or lora_B")
    if not paths:
        raise CheckpointError("adapter has no tensors")
    return tensors


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """(B @ A) * scaling in float32 on CPU by a fixed order of elementwise operations."""
    a = a.detach().to("cpu", torch.float32).contiguous()
    b = b.detach().to("cpu", torch.float32).contiguous()
    acc = torch.zeros((b.shape[0], a.shape[1]), dtype=torch.float32)
    term = torch.empty_like(acc)
    for k in range(a.shape[0]):
        torch.mul(b[:, k:k + 1], a[k:k + 1, :], out=term)
        acc.add_(term)
    acc.mul_(torch.tensor(scaling, dtype=torch.float32))
    return acc


def merge_lora(model: torch.nn.Module, tensors: dict[str, np.ndarray], rank: int, alpha: int) -> torch.nn.Module:
    """A copy of `model` with W += lora_delta(A, B, alpha / rank) for every adapted module."""
    merged = copy.deepcopy(model).to("cpu", torch.float32)
    modules = dict(merged.named_modules())
    scale = alpha / rank
    with torch.no_grad():
        for name in sorted(tensors):
            if not name.endswith(".lora_A.weight"):
                continue
            path = name[: -len(".lora_A.weight")]
            a = torch.from_numpy(np.ascontiguousarray(tensors[name]))
            b = torch.from_numpy(np.ascontiguousarray(tensors[f"{path}.lora_B.weight"]))
            w = modules[path].weight
            w.copy_(torch.add(w.detach(), lora_delta(a, b, scale)))
    return merged


def load_checkpoint(base: LoadedModel, manifest: Manifest, files: dict[str, bytes]) -> LoadedModel:
    """The checkpoint's model. `base` must be the base model the manifest names. Raises
    CheckpointUnavailableError for a file missing or not the manifest's bytes, and
    CheckpointInvalidError for a checkpoint whose bound bytes fail a check every node repeats (another
    base, no adapter file, an adapter that does not decode or does not give the manifest's weights
    root or fingerprint)."""
    for f in manifest.files:
        if f.name not in files:
            raise CheckpointUnavailableError(f"checkpoint file {f.name} was not fetched")
        check_file(manifest, f.name, files[f.name])
    try:
        return _merge_checked(base, manifest, files)
    except CheckpointInvalidError:
        raise
    except CheckpointError as exc:
        raise CheckpointInvalidError(str(exc)) from None


def _merge_checked(base: LoadedModel, manifest: Manifest, files: dict[str, bytes]) -> LoadedModel:
    if base.fingerprint.hex() != manifest.base_fingerprint:
        raise CheckpointError(f"checkpoint applies to base {manifest.base_fingerprint[:16]}…, "
                              f"the loaded base is {base.fingerprint.hex()[:16]}…")
    if ADAPTER_FILE not in files:
        raise CheckpointError(f"the manifest lists no {ADAPTER_FILE}")
    tensors = decode_adapter(files[ADAPTER_FILE], manifest, base)
    root = lora_weights_root(base.weights_root, tensors_root(tensors.items()), manifest.adapter)
    if root.hex() != manifest.weights_root:
        raise CheckpointError("the adapter does not give the manifest's weights root")
    merged = merge_lora(base.model, tensors, manifest.adapter["rank"], manifest.adapter["alpha"])
    lm = base.with_weights(merged, root, manifest.generation, name=f"{base.name}@v{manifest.version}",
                           meta={**base.meta, "checkpoint_version": manifest.version,
                                 "from_window": manifest.from_window})
    if lm.fingerprint.hex() != manifest.fingerprint:
        raise CheckpointError(f"checkpoint fingerprint {lm.fingerprint.hex()[:16]}… is not the manifest's "
                              f"{manifest.fingerprint[:16]}…")
    return lm
