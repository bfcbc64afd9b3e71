"""Checkpoints: signed manifests, on-chain announcements and the rule that picks the checkpoint in
force for a window (docs/protocol.md section 15). Pure: no torch, no network.

A checkpoint is a LoRA adapter on the base model (the model loaded from its source, whose
fingerprint uses BASE_GENERATION). Its weights root is

    weights_root = PRF("lora-weights", base_weights_root, tensors_root(adapter tensors),
                       canonical_json(adapter config))

and its fingerprint is model_fingerprint(weights_root, tokenizer, chat template,
{"eos_ids", "params": generation}) exactly as for the base (section 7), so a bundle names the
checkpoint it was generated with. The manifest (canonical JSON, integers and strings only) is signed
by the trainer's sr25519 hotkey over PRF("checkpoint-manifest", canonical_json(body)); the chain
holds (from_window, fingerprint, SHA-256 of the manifest file, location).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass

from verification.canonical import canonical_json
from verification.challenge import window_of_block
from verification.constants import (
    ACTIVATION_WINDOWS,
    MAX_ANNOUNCE_AHEAD_WINDOWS,
    MAX_CHECKPOINT_FILE_BYTES,
    MAX_CHECKPOINT_LOCATION_BYTES,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    PROTOCOL_VERSION,
)
from verification.errors import (
    CheckpointError,
    CheckpointInvalidError,
    CheckpointUnavailableError,
    EnvironmentSpecError,
    TaskLibraryError,
)
from verification.generation import GenerationParams
from verification.json_depth import nesting_depth
from verification.prf import prf

_HEX32 = re.compile(r"^[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST_KEYS = {"protocol_version", "netuid", "version", "from_window", "base_fingerprint",
                 "parent_fingerprint", "fingerprint", "weights_root", "adapter", "files", "generation",
                 "trainer_hotkey", "signature"}
ADAPTER_KEYS = {"kind", "rank", "alpha", "target_modules"}


@dataclass(frozen=True)
class ManifestFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    protocol_version: int
    netuid: int
    version: int  # 1, 2, ... (the base model is version 0 and has no manifest)
    from_window: int
    base_fingerprint: str
    parent_fingerprint: str
    fingerprint: str
    weights_root: str
    adapter: dict  # {"kind": "lora", "rank": int, "alpha": int, "target_modules": [str, ...]}
    files: tuple[ManifestFile, ...]
    generation: GenerationParams
    trainer_hotkey: str
    signature: str = ""

    def body(self) -> dict:
        return {
            "protocol_version": self.protocol_version, "netuid": self.netuid, "version": self.version,
            "from_window": self.from_window, "base_fingerprint": self.base_fingerprint,
            "parent_fingerprint": self.parent_fingerprint, "fingerprint": self.fingerprint,
            "weights_root": self.weights_root, "adapter": dict(self.adapter),
            "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in self.files],
            "generation": self.generation.to_json(), "trainer_hotkey": self.trainer_hotkey,
        }

    def signing_message(self) -> bytes:
        return prf("checkpoint-manifest", canonical_json(self.body()))

    def to_bytes(self) -> bytes:
        return canonical_json({**self.body(), "signature": self.signature})

    def file(self, name: str) -> ManifestFile:
        for f in self.files:
            if f.name == name:
                return f
        raise CheckpointError(f"manifest lists no file {name!r}")


def lora_weights_root(base_weights_root: bytes, adapter_tensors_root: bytes, adapter_config: dict) -> bytes:
    return prf("lora-weights", base_weights_root, adapter_tensors_root, canonical_json(adapter_config))


def manifest_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def parse_manifest(data: bytes) -> Manifest:
    """Parse and shape-check manifest bytes (canonical JSON). Raises CheckpointError, or TaskLibraryError
    when its params name a library-backed environment this node cannot make."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"manifest is {len(data)} bytes, limit {MAX_MANIFEST_BYTES}")
    if nesting_depth(data) > MAX_JSON_DEPTH:
        raise CheckpointError("manifest nests too deep")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"manifest is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != MANIFEST_KEYS:
        raise CheckpointError(f"manifest must have exactly the keys {sorted(MANIFEST_KEYS)}")
    if canonical_json(obj) != data:
        raise CheckpointError("manifest is not in canonical form")
    for key in ("protocol_version", "netuid", "version", "from_window"):
        if not _nonneg_int(obj[key]):
            raise CheckpointError(f"manifest {key} must be a non-negative integer")
    if obj["protocol_version"] != PROTOCOL_VERSION:
        raise CheckpointError(f"manifest is for protocol {obj['protocol_version']}, this is {PROTOCOL_VERSION}")
    if obj["version"] < 1:
        raise CheckpointError("checkpoint versions start at 1 (0 is the base model)")
    for key in ("base_fingerprint", "parent_fingerprint", "fingerprint", "weights_root"):
        if not isinstance(obj[key], str) or not _HEX32.match(obj[key]):
            raise CheckpointError(f"manifest {key} must be 64 lowercase hex digits")
    adapter = obj["adapter"]
    if (not isinstance(adapter, dict) or set(adapter) != ADAPTER_KEYS or adapter["kind"] != "lora"
            or not _nonneg_int(adapter["rank"]) or not 1 <= adapter["rank"] <= 1024
            or not _nonneg_int(adapter["alpha"]) or not 1 <= adapter["alpha"] <= 1 << 16
            or not isinstance(adapter["target_modules"], list) or not adapter["target_modules"]
            or not all(isinstance(m, str) and _FILE_NAME.match(m) for m in adapter["target_modules"])):
        raise CheckpointError("manifest adapter must be {kind: lora, rank 1..1024, alpha 1..65536, target_modules}")
    files = obj["files"]
    if not isinstance(files, list) or not 1 <= len(files) <= 16:
        raise CheckpointError("manifest must list 1 to 16 files")
    parsed_files = []
    for f in files:
        if (not isinstance(f, dict) or set(f) != {"name", "sha256", "size"} or not isinstance(f["name"], str)
                or not _FILE_NAME.match(f["name"]) or not isinstance(f["sha256"], str)
                or not _HEX32.match(f["sha256"]) or not _nonneg_int(f["size"])
                or f["size"] > MAX_CHECKPOINT_FILE_BYTES):
            raise CheckpointError("each manifest file needs a plain name, a sha256 and a size within limits")
        parsed_files.append(ManifestFile(f["name"], f["sha256"], f["size"]))
    if len({f.name for f in parsed_files}) != len(parsed_files):
        raise CheckpointError("manifest lists a file twice")
    try:
        generation = GenerationParams.from_json(obj["generation"])
    except TaskLibraryError:
        raise  # this node's own install, not the manifest's fault: the caller decides (check_announced_manifest)
    except EnvironmentSpecError as exc:
        raise CheckpointError(f"manifest generation params: {exc}") from None
    if not isinstance(obj["trainer_hotkey"], str) or not 1 <= len(obj["trainer_hotkey"]) <= 64:
        raise CheckpointError("manifest trainer_hotkey must be an ss58 address")
    if not isinstance(obj["signature"], str) or not re.match(r"^[0-9a-f]{128}$", obj["signature"]):
        raise CheckpointError("manifest signature must be 128 lowercase hex digits")
    return Manifest(obj["protocol_version"], obj["netuid"], obj["version"], obj["from_window"],
                    obj["base_fingerprint"], obj["parent_fingerprint"], obj["fingerprint"], obj["weights_root"],
                    {"kind": "lora", "rank": adapter["rank"], "alpha": adapter["alpha"],
                     "target_modules": list(adapter["target_modules"])},
                    tuple(parsed_files), generation, obj["trainer_hotkey"], obj["signature"])


def verify_manifest_signature(manifest: Manifest, trainer_hotkey: str) -> None:
    """Raise CheckpointError unless the manifest names trainer_hotkey and carries its signature."""
    from verification.errors import SignatureError
    from verification.signing import verify

    if manifest.trainer_hotkey != trainer_hotkey:
        raise CheckpointError(f"manifest is signed by {manifest.trainer_hotkey}, the chain's trainer is {trainer_hotkey}")
    try:
        verify(trainer_hotkey, manifest.signing_message(), bytes.fromhex(manifest.signature))
    except SignatureError as exc:
        raise CheckpointError(f"manifest signature: {exc}") from None


def check_announced_manifest(ann: "Announcement", data: bytes, trainer_hotkey: str | None) -> Manifest:
    """The manifest an announcement names, from bytes a node fetched at its location (section 15).
    Bytes that do not hash to the announced SHA-256 are CheckpointUnavailableError (the store may
    serve other nodes other bytes: no verdict on the announcement), and so are params naming a
    library-backed environment this node's reasoning-gym cannot make (TaskLibraryError: its own
    install, not the checkpoint, is at fault). Bytes that do are judged for
    every node alike: CheckpointInvalidError when the manifest is malformed, is not signed by the
    chain's trainer key, or names another fingerprint or from_window than the announcement."""
    if manifest_hash(data) != ann.manifest_hash:
        raise CheckpointUnavailableError("the manifest fetched does not hash to the announced manifest hash")
    if trainer_hotkey is None:
        raise CheckpointInvalidError("a checkpoint is announced but the chain names no trainer key")
    try:
        manifest = parse_manifest(data)
        verify_manifest_signature(manifest, trainer_hotkey)
    except TaskLibraryError as exc:  # params naming an rg_* environment this node cannot make: no verdict
        raise CheckpointUnavailableError(f"this node cannot make the checkpoint's problems: {exc}") from None
    except CheckpointError as exc:
        raise CheckpointInvalidError(str(exc)) from None
    if manifest.fingerprint != ann.fingerprint.hex() or manifest.from_window != ann.from_window:
        raise CheckpointInvalidError("the manifest's fingerprint or window differs from the announcement")
    return manifest


# ---- announcements and the window rule -----------------------------------------------------------
@dataclass(frozen=True)
class Announcement:
    """What the chain holds for one checkpoint: from_window, fingerprint, manifest SHA-256, location,
    the block the announcement landed in, the block the registry's admin voided it in (0: not
    voided; subtensor announcements are never voided, a later one supersedes them), and the trainer
    hotkey the registry bound to it when it landed ("": the chain's trainer key, as on subtensor,
    where the announcer's own commitment carries it)."""

    from_window: int
    fingerprint: bytes
    manifest_hash: bytes
    location: str
    block: int
    voided_block: int = 0
    signer: str = ""

    def __post_init__(self):
        if len(self.fingerprint) != 32 or len(self.manifest_hash) != 32:
            raise CheckpointError("announcement fingerprint and manifest hash are 32 bytes")
        if len(self.location.encode()) > MAX_CHECKPOINT_LOCATION_BYTES:
            raise CheckpointError("announcement location is too long")

    @property
    def valid(self) -> bool:
        """Landed at least ACTIVATION_WINDOWS and at most MAX_ANNOUNCE_AHEAD_WINDOWS before the
        window it applies from."""
        landed = window_of_block(self.block)
        return landed + ACTIVATION_WINDOWS <= self.from_window <= landed + MAX_ANNOUNCE_AHEAD_WINDOWS

    def voided_for(self, window: int) -> bool:
        """A void applies from ACTIVATION_WINDOWS after the window it landed in, like an
        announcement: a window already decided stays decided."""
        return self.voided_block > 0 and window_of_block(self.voided_block) + ACTIVATION_WINDOWS <= window

    @property
    def verdict_key(self) -> tuple[int, bytes, bytes]:
        """What an invalid verdict is a function of (with the trainer key): the announced window,
        fingerprint and manifest SHA-256 (the manifest binds every file's SHA-256)."""
        return self.from_window, self.fingerprint, self.manifest_hash


def checkpoint_candidates(window: int, announcements: Iterable[Announcement]) -> list[Announcement]:
    """The announcements that may be in force for `window`, best first: valid, not voided for the
    window, with from_window <= window, ordered by (from_window, block) descending. The first one
    that is not invalid (section 15) is in force; none left means the base model."""
    eligible = [a for a in announcements if a.valid and a.from_window <= window and not a.voided_for(window)]
    return sorted(eligible, key=lambda a: (a.from_window, a.block), reverse=True)


def checkpoint_for(window: int, announcements: Iterable[Announcement],
                   invalid: Container[tuple[int, bytes, bytes]] = ()) -> Announcement | None:
    """The announcement in force for `window`: the first of checkpoint_candidates whose verdict_key
    is not in `invalid` (the announcements known to fail a check every node repeats). None means
    the base model."""
    for a in checkpoint_candidates(window, announcements):
        if a.verdict_key not in invalid:
            return a
    return None


def _nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
