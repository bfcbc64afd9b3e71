"""Turning the policy's adapter into a signed checkpoint (manifest + adapter file), checked by the
same code miners and validators load it with before it leaves the trainer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from trainer.adapter_files import adapter_config, adapter_tensors, adapter_to_bytes
from trainer.policy import Policy
from verification.checkpoint import Manifest, ManifestFile, lora_weights_root
from verification.checkpoint_model import ADAPTER_FILE, load_checkpoint, merge_lora
from verification.constants import PROTOCOL_VERSION
from verification.errors import CheckpointError
from verification.fingerprint import tensors_root
from verification.generation import GenerationParams
from verification.model import LoadedModel, compute_fingerprint
from verification.signing import sign


@dataclass
class BuiltCheckpoint:
    manifest: Manifest
    files: dict[str, bytes]
    model: LoadedModel  # the merged checkpoint model (verified by load_checkpoint)

    @property
    def size_bytes(self) -> int:
        return sum(len(b) for b in self.files.values()) + len(self.manifest.to_bytes())


def protocol_adapter_config(policy: Policy) -> dict:
    cfg = adapter_config(policy)
    alpha = cfg["alpha"]
    if float(alpha) != int(alpha):
        raise CheckpointError(f"the protocol's LoRA alpha is an integer, the policy's is {alpha}")
    return {"kind": "lora", "rank": int(cfg["rank"]), "alpha": int(alpha),
            "target_modules": list(cfg["target_modules"])}


def attach_files(built: "BuiltCheckpoint", keypair, from_window: int, extra: dict[str, bytes]) -> "BuiltCheckpoint":
    """The same checkpoint with more files (the training record's) and its final from_window: the
    manifest lists them and is re-signed (the fingerprint and model do not depend on either)."""
    files = {**built.files, **extra}
    listed = tuple(ManifestFile(name, hashlib.sha256(data).hexdigest(), len(data)) for name, data in files.items())
    body = replace(built.manifest, from_window=from_window, files=listed, signature="")
    manifest = replace(body, signature=sign(keypair, body.signing_message()).hex())
    return replace(built, manifest=manifest, files=files)


def retarget_checkpoint(built: "BuiltCheckpoint", keypair, from_window: int) -> "BuiltCheckpoint":
    """The same checkpoint for a later from_window: the manifest re-signed (the fingerprint, files
    and model do not depend on the window)."""
    body = replace(built.manifest, from_window=from_window, signature="")
    manifest = replace(body, signature=sign(keypair, body.signing_message()).hex())
    return replace(built, manifest=manifest)


def build_checkpoint(base: LoadedModel, policy: Policy, *, keypair, netuid: int, version: int,
                     from_window: int, parent_fingerprint: bytes, params: GenerationParams) -> BuiltCheckpoint:
    tensors = adapter_tensors(policy)
    data = adapter_to_bytes(tensors, adapter_config(policy))
    config = protocol_adapter_config(policy)
    arrays = {k: v.numpy() for k, v in tensors.items()}
    root = lora_weights_root(base.weights_root, tensors_root(arrays.items()), config)
    unsigned = Manifest(
        protocol_version=PROTOCOL_VERSION, netuid=netuid, version=version, from_window=from_window,
        base_fingerprint=base.fingerprint.hex(), parent_fingerprint=parent_fingerprint.hex(),
        fingerprint="00" * 32, weights_root=root.hex(), adapter=config,
        files=(ManifestFile(ADAPTER_FILE, hashlib.sha256(data).hexdigest(), len(data)),),
        generation=params, trainer_hotkey=keypair.ss58_address)
    # the fingerprint needs the merged model's identity only through weights_root and params, so it
    # is computed without merging; load_checkpoint below merges and checks it
    fp = compute_fingerprint(root, base.tokenizer_json, base.chat_template, base.eos_ids, params)
    body = replace(unsigned, fingerprint=fp.hex())
    manifest = replace(body, signature=sign(keypair, body.signing_message()).hex())
    files = {ADAPTER_FILE: data}
    model = load_checkpoint(base, manifest, files)
    if not np.isfinite([float(v.abs().max()) for v in tensors.values()]).all():
        raise CheckpointError("the adapter has non-finite values")
    return BuiltCheckpoint(manifest, files, model)


def merged_model(base: LoadedModel, tensors: dict, config: dict, params: GenerationParams) -> LoadedModel:
    """The model of an adapter that is not published (a replayed candidate): the protocol's merge
    (bit-exact) under params, with its weights root and fingerprint."""
    arrays = {k: v.detach().to("cpu").numpy() for k, v in tensors.items()}
    root = lora_weights_root(base.weights_root, tensors_root(arrays.items()), config)
    merged = merge_lora(base.model, arrays, config["rank"], config["alpha"])
    return base.with_weights(merged, root, params, name=f"{base.name}@candidate")
