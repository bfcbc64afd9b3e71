"""Publishing and fetching checkpoints, and the model in force for a window.

A checkpoint lives in a bundle store beside the bundles, under
    rollproof/<netuid>/checkpoints/<fingerprint hex>/{manifest.json, adapter.safetensors}
and the chain's announcement holds the manifest's location; the other files are found next to it
(same URI with the last path segment replaced by the file name).

ModelResolver.model_for(window) derives the checkpoint from chain data alone (the window rule of
docs/protocol.md section 15), fetches the manifest and files, checks the manifest's SHA-256 against
the chain, its signature against the chain's trainer key, every file's SHA-256 and size, and the
recomputed fingerprint; only then is the model used. A failure is one of two kinds:
  * CheckpointInvalidError: the bytes the chain binds fail a check every node repeats. The
    announcement is void for every node alike; the verdict is kept (never refetched) and the next
    candidate (the previous valid checkpoint, recursively down to the base model) is in force.
  * CheckpointUnavailableError (or any other CheckpointError): this node could not get the bound
    bytes. The caller skips the window and logs it; it never falls back to another model.

Metrics (adapters/telemetry.py NodeMetrics, label role): every judgement moves
rollproof_checkpoints_judged_total: verdict "valid" once per announcement judged valid (a model
loaded again after leaving the cache is not judged again), "invalid" once per announcement (the
verdict is kept), "unavailable" per failed attempt (each is a window skipped or a judgement
deferred). rollproof_checkpoint_version is the version in force for the window model_for last
resolved (0: the base model); prepare()'s look-ahead does not move it."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from adapters.chain.base import Chain
from adapters.fetch import Fetcher
from adapters.storage import BundleStore
from adapters.telemetry import NodeMetrics, metrics_of
from verification.checkpoint import (
    Announcement,
    Manifest,
    check_announced_manifest,
    parse_manifest,
    verify_manifest_signature,
)
from verification.constants import MAX_MANIFEST_BYTES
from verification.training_record import DATA_DIR
from verification.errors import CheckpointError, CheckpointInvalidError, CheckpointUnavailableError, StorageError

log = logging.getLogger("rollproof.checkpoints")
MANIFEST_FILE = "manifest.json"
DEFAULT_CACHED_MODELS = 3  # checkpoints kept loaded: the one in force, its predecessor, the next one


def checkpoint_prefix(netuid: int, fingerprint_hex: str) -> str:
    return f"rollproof/{netuid}/checkpoints/{fingerprint_hex}"


def publish_checkpoint(store: BundleStore, manifest: Manifest, files: dict[str, bytes],
                       data: dict[str, bytes] | None = None) -> str:
    """Upload the training data its record names (data/<sha256 hex>), the files, then the manifest;
    returns the manifest's location URI."""
    prefix = checkpoint_prefix(manifest.netuid, manifest.fingerprint)
    for h, blob in (data or {}).items():
        store.put(f"{prefix}/{DATA_DIR}/{h}", blob)
    for f in manifest.files:
        store.put(f"{prefix}/{f.name}", files[f.name])
    return store.put(f"{prefix}/{MANIFEST_FILE}", manifest.to_bytes())


def sibling(location: str, name: str) -> str:
    head, sep, _ = location.rpartition("/")
    if not sep:
        raise CheckpointError(f"checkpoint location {location!r} has no directory part")
    return f"{head}/{name}"


def fetch_checkpoint(fetcher: Fetcher, ann: Announcement, trainer_hotkey: str | None) -> tuple[Manifest, dict[str, bytes]]:
    """Manifest and files of an announcement, every check but the model ones done (the manifest's
    by check_announced_manifest: CheckpointInvalidError or CheckpointUnavailableError)."""
    try:
        data = fetcher.fetch(ann.location, max_bytes=MAX_MANIFEST_BYTES)
    except StorageError as exc:
        raise CheckpointUnavailableError(f"cannot fetch the manifest at {ann.location}: {exc}") from None
    manifest = check_announced_manifest(ann, data, trainer_hotkey)
    return manifest, fetch_files(fetcher, ann.location, manifest)


def fetch_files(fetcher: Fetcher, manifest_location: str, manifest: Manifest) -> dict[str, bytes]:
    """Every file the manifest lists, read beside it, each bounded by its stated size."""
    files = {}
    for f in manifest.files:
        try:
            files[f.name] = fetcher.fetch(sibling(manifest_location, f.name), max_bytes=f.size)
        except (StorageError, CheckpointError) as exc:  # sibling(): a location with no directory part
            raise CheckpointUnavailableError(f"cannot fetch checkpoint file {f.name}: {exc}") from None
    return files


class ModelResolver:
    """The model in force for each window, loaded and verified once per checkpoint."""

    def __init__(self, chain: Chain, base, fetcher: Fetcher, *, cached_models: int = DEFAULT_CACHED_MODELS,
                 replay: Callable | None = None, registry: CollectorRegistry | None = None, role: str = ""):
        """replay(location, manifest, files, model): the proof-of-learning check a checkpoint must
        pass before it is used (trainer/replay_node.py's CheckpointReplayer; docs/protocol.md section
        16); it raises CheckpointInvalidError when the checkpoint does not replay. None: not checked
        (tests of the other rules only; every node command passes one).
        registry, role: the NodeMetrics this node's judgements move, under label role (None: a
        private registry)."""
        self.chain = chain
        self.node_metrics = metrics_of(NodeMetrics, registry)
        self.role = role
        self.base = base
        self.fetcher = fetcher
        self.replay = replay
        self.replayed: dict[tuple, object] = {}  # verdict key -> the replay's report (kept: never replayed twice)
        self.cached_models = cached_models
        # loaded models by (announcement's verdict_key, trainer hotkey): a model is reused only for
        # the announcement whose manifest was checked (another announcement of the same fingerprint
        # is judged on its own manifest)
        self._models: OrderedDict[tuple, object] = OrderedDict()
        # invalid verdicts: (announcement's verdict_key, trainer hotkey) -> why; a function of bytes
        # bound on chain, so never refetched
        self._invalid: dict[tuple, str] = {}
        self._versions: dict[tuple, int] = {}  # the manifest version of every announcement judged valid

    def invalid_verdicts(self) -> dict[tuple, str]:
        return dict(self._invalid)

    def announcement_for(self, window: int) -> Announcement | None:
        """The announcement in force for window (None: the base model): the first candidate whose
        checkpoint is not invalid. Raises CheckpointError (unavailable: skip the window) when a
        candidate before it cannot be judged by this node."""
        for ann in self.chain.announcement_candidates(window):
            if self._judge(ann, window) is not None:
                return ann
        return None

    def model_for(self, window: int):
        """The LoadedModel for window; CheckpointError (not CheckpointInvalidError) when this node
        cannot get the checkpoint in force (the window is skipped)."""
        lm, version = self._resolve(window)
        self.node_metrics.checkpoint_version.labels(self.role).set(version)
        return lm

    def _resolve(self, window: int):
        """(the LoadedModel in force for window, its version: 0 for the base model)."""
        for ann in self.chain.announcement_candidates(window):
            judged = self._judge(ann, window)
            if judged is not None:
                return judged
        return self.base, 0

    def prepare(self, window: int) -> None:
        """Judge the checkpoint of an upcoming window now (fetch, verify and replay it, docs/protocol.md
        section 16), so that a replay's minutes are spent before the window starts, not in it. A
        checkpoint this node cannot get yet is logged and tried again when the window comes."""
        try:
            self._resolve(window)
        except CheckpointError as exc:  # counted as unavailable by _judge
            log.info("the checkpoint of window %d cannot be judged yet: %s", window, exc)

    def judge(self, ann: Announcement):
        """The announcement's model, or None when it is invalid (the verdict kept); CheckpointError
        when this node cannot get it."""
        judged = self._judge(ann, ann.from_window)
        return None if judged is None else judged[0]

    def signer_of(self, ann: Announcement) -> str | None:
        """The hotkey whose signature ann's manifest must carry: the one the registry bound to it,
        else the chain's trainer key (subtensor: the announcer)."""
        return ann.signer or self.chain.trainer_hotkey()

    def _judge(self, ann: Announcement, window: int):
        """(the announcement's model, its version), or None once it is known invalid (the verdict
        kept); CheckpointError when this node cannot get it. Each verdict moves its metric."""
        trainer = self.signer_of(ann)
        key = (ann.verdict_key, trainer)
        if key in self._invalid:
            return None
        try:
            lm = self.load(ann, trainer)
        except CheckpointInvalidError as exc:
            self._invalid[key] = str(exc)
            self.node_metrics.checkpoints_judged.labels(self.role, "invalid").inc()
            log.warning("window %d: the checkpoint announced for window %d (%s…) is invalid, void on every "
                        "node (protocol section 15), the previous one stays in force: %s",
                        window, ann.from_window, ann.fingerprint.hex()[:16], exc)
            return None
        except CheckpointError:
            self.node_metrics.checkpoints_judged.labels(self.role, "unavailable").inc()
            raise
        return lm, self._versions[key]

    def load(self, ann: Announcement, trainer: str | None = None):
        trainer = self.signer_of(ann) if trainer is None else trainer
        key = (ann.verdict_key, trainer)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        from verification.checkpoint_model import load_checkpoint  # torch: only once a checkpoint is in force

        manifest, files = fetch_checkpoint(self.fetcher, ann, trainer)
        lm = load_checkpoint(self.base, manifest, files)
        if self.replay is not None and key not in self.replayed:
            self.replayed[key] = self.replay(ann.location, manifest, files, lm)
            log.info("checkpoint v%d (%s…) replays from its training record", manifest.version, ann.fingerprint.hex()[:16])
        if key not in self._versions:  # judged valid: counted once (a reload after eviction is not a judgement)
            self._versions[key] = manifest.version
            self.node_metrics.checkpoints_judged.labels(self.role, "valid").inc()
        self._models[key] = lm
        while len(self._models) > self.cached_models:
            self._models.popitem(last=False)
        log.info("checkpoint v%d (%s…) loaded and verified; in force from window %d",
                 manifest.version, ann.fingerprint.hex()[:16], ann.from_window)
        return lm


def find_checkpoint(store_root, fingerprint_hex: str) -> tuple[Manifest, dict[str, bytes]]:
    """An offline auditor's lookup: the checkpoint with this fingerprint in a file store (any netuid).
    Checks the manifest's form, its signature against the trainer key it names (the caller compares
    that key with the chain's, when it has one) and every file's SHA-256."""
    from pathlib import Path

    from verification.checkpoint_model import check_file

    root = Path(store_root).expanduser().resolve()
    hits = sorted(root.glob(f"rollproof/*/checkpoints/{fingerprint_hex}/{MANIFEST_FILE}"))
    if not hits:
        raise CheckpointError(f"no checkpoint {fingerprint_hex[:16]}… under {root}")
    fetcher = Fetcher(file_roots=[root])
    location = hits[0].as_uri()
    try:
        data = fetcher.fetch(location, max_bytes=MAX_MANIFEST_BYTES)
    except StorageError as exc:
        raise CheckpointError(str(exc)) from None
    manifest = parse_manifest(data)
    verify_manifest_signature(manifest, manifest.trainer_hotkey)
    files = fetch_files(fetcher, location, manifest)
    for name, data in files.items():
        check_file(manifest, name, data)
    return manifest, files
