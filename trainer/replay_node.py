"""What a node runs before a checkpoint comes into force: fetch what its training record names from
beside the manifest, judge its parent, and replay it (trainer/replay.py).

A checkpoint's files live at `rollproof/<netuid>/checkpoints/<fingerprint>/` in the trainer's store;
the reports and bundles its record names at `data/<sha256 hex>` in that directory, and its parent
at `../<parent fingerprint>/` (docs/protocol.md section 16). A checkpoint is valid only if its
parent is: the parent is judged the same way (recursively down to version 1, whose parent is the
base model), each verdict kept by manifest SHA-256, so a node replays each checkpoint once.

The `CheckpointReplayer` is the hook `adapters.checkpoints.ModelResolver(replay=...)` calls after the
checkpoint's manifest and files checked out: it raises CheckpointInvalidError (ReplayMismatchError,
TrainingRecordError) when the checkpoint does not replay, CheckpointUnavailableError when this node
could not fetch what the replay needs.

Metrics: every replay run to its end (it replays, or it does not) is one observation of
rollproof_checkpoint_replay_seconds (adapters/telemetry.py NodeMetrics, label role), parents
included, each timed on its own; the verdicts are counted by the ModelResolver that asked."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from adapters.checkpoints import MANIFEST_FILE, fetch_files, sibling
from adapters.fetch import Fetcher
from adapters.telemetry import NodeMetrics, metrics_of
from trainer.replay import HeldoutCache, ParentCheckpoint, ReplayReport, replay_checkpoint
from verification.checkpoint import Manifest, parse_manifest, verify_manifest_signature
from verification.checkpoint_model import check_file
from verification.constants import MAX_MANIFEST_BYTES, MAX_TRAINING_DATA_BYTES
from verification.errors import (
    CheckpointError,
    CheckpointInvalidError,
    CheckpointUnavailableError,
    ReplayMismatchError,
    TaskLibraryError,
    StorageError,
)
from verification.model import LoadedModel
from verification.training_record import DATA_DIR, TRAINING_FILE, parse_training_record

log = logging.getLogger("rollproof.replay")
MAX_LINEAGE_DEPTH = 4096  # parents followed for one verdict (each is replayed once and kept)


def parent_location(location: str, parent_fingerprint: str) -> str:
    """.../checkpoints/<fp>/manifest.json -> .../checkpoints/<parent fp>/manifest.json"""
    directory, sep, _ = location.rpartition("/")
    parent_dir, sep2, _ = directory.rpartition("/")
    if not sep or not sep2:
        raise CheckpointUnavailableError(f"checkpoint location {location!r} is not in a checkpoints directory")
    return f"{parent_dir}/{parent_fingerprint}/{MANIFEST_FILE}"


class CheckpointReplayer:
    """Replays checkpoints for one node (chain: ledger entries; fetcher: the trainer's store)."""

    def __init__(self, chain, base: LoadedModel, fetcher: Fetcher, *, cached_models: int = 2,
                 on_line: Callable[[str], None] | None = None, registry: CollectorRegistry | None = None,
                 role: str = ""):
        """registry, role: the NodeMetrics the replays' durations go to, under label role (None: a
        private registry)."""
        self.chain = chain
        self.replay_seconds = metrics_of(NodeMetrics, registry).checkpoint_replay_seconds.labels(role)
        self.base = base
        self.fetcher = fetcher
        self.on_line = on_line
        self.heldout = HeldoutCache()
        self.reports: dict[str, ReplayReport] = {}  # manifest SHA-256 hex -> the replay that passed
        self.invalid: dict[str, str] = {}  # manifest SHA-256 hex -> why it does not replay
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # fingerprint -> merged (parents)
        self._cached_models = cached_models

    def __call__(self, location: str, manifest: Manifest, files: dict[str, bytes], lm: LoadedModel) -> ReplayReport:
        return self.judge(location, manifest.to_bytes(), manifest, files, lm)

    def judge(self, location: str, manifest_bytes: bytes, manifest: Manifest, files: dict[str, bytes],
              lm: LoadedModel | None = None, depth: int = 0) -> ReplayReport:
        key = hashlib.sha256(manifest_bytes).hexdigest()
        if key in self.reports:
            return self.reports[key]
        if key in self.invalid:
            raise ReplayMismatchError(self.invalid[key])
        try:
            report = self._replay(location, manifest, files, lm, depth)
        except CheckpointInvalidError as exc:
            self.invalid[key] = f"v{manifest.version} does not replay: {exc}"
            raise
        self.reports[key] = report
        return report

    def _replay(self, location: str, manifest: Manifest, files: dict[str, bytes], lm: LoadedModel | None,
                depth: int) -> ReplayReport:
        if TRAINING_FILE not in files:
            from verification.errors import TrainingRecordError

            raise TrainingRecordError(f"the manifest lists no {TRAINING_FILE}: a checkpoint without a training record "
                                      f"cannot be replayed")
        record = parse_training_record(files[TRAINING_FILE])
        parent = parent_model = None
        if record.parent_version > 0:
            if depth >= MAX_LINEAGE_DEPTH:
                raise CheckpointUnavailableError(f"more than {MAX_LINEAGE_DEPTH} parents to judge")
            parent, ploc = self._fetch_parent(location, record.parent_fingerprint)
            try:  # the parent must itself be valid (and is replayed first when this node never judged it)
                self.judge(ploc, parent.manifest_bytes, parent.manifest, parent.files, depth=depth + 1)
            except CheckpointInvalidError as exc:
                raise ReplayMismatchError(f"its parent v{parent.manifest.version} is not valid ({exc})") from None
            parent_model = self._model(parent.manifest, parent.files)

        def data(h: str) -> bytes:
            try:
                return self.fetcher.fetch(sibling(location, f"{DATA_DIR}/{h}"), max_bytes=MAX_TRAINING_DATA_BYTES)
            except (StorageError, CheckpointError) as exc:
                raise CheckpointUnavailableError(f"cannot fetch training data {h[:16]}…: {exc}") from None

        say = self.on_line or (lambda line: log.info("replay: %s", line))
        started = time.perf_counter()
        try:
            report = replay_checkpoint(self.base, manifest, files, data=data, ledger=self.chain.ledger_entry,
                                       parent=parent, parent_model=parent_model, announced_model=lm,
                                       heldout=self.heldout, on_line=say)
        except CheckpointInvalidError:  # judged: it does not replay
            self.replay_seconds.observe(time.perf_counter() - started)
            raise
        self.replay_seconds.observe(time.perf_counter() - started)
        if lm is not None:
            self._keep(manifest.fingerprint, lm)
        return report

    def _fetch_parent(self, location: str, parent_fp: str) -> tuple[ParentCheckpoint, str]:
        ploc = parent_location(location, parent_fp)
        try:
            data = self.fetcher.fetch(ploc, max_bytes=MAX_MANIFEST_BYTES)
        except StorageError as exc:
            raise CheckpointUnavailableError(f"cannot fetch the parent manifest at {ploc}: {exc}") from None
        try:
            manifest = parse_manifest(data)
            verify_manifest_signature(manifest, manifest.trainer_hotkey)
        except TaskLibraryError as exc:  # this node lacks the pinned task library: it cannot judge
            raise CheckpointUnavailableError(f"cannot read the parent manifest here: {exc}") from None
        except CheckpointError as exc:
            raise ReplayMismatchError(f"the parent manifest is not a checkpoint manifest: {exc}") from None
        files = fetch_files(self.fetcher, ploc, manifest)
        for name, blob in files.items():
            check_file(manifest, name, blob)
        return ParentCheckpoint(data, manifest, files), ploc

    def _model(self, manifest: Manifest, files: dict[str, bytes]) -> LoadedModel:
        if manifest.fingerprint in self._models:
            self._models.move_to_end(manifest.fingerprint)
            return self._models[manifest.fingerprint]
        from verification.checkpoint_model import load_checkpoint

        lm = load_checkpoint(self.base, manifest, files)
        self._keep(manifest.fingerprint, lm)
        return lm

    def _keep(self, fingerprint: str, lm: LoadedModel) -> None:
        self._models[fingerprint] = lm
        while len(self._models) > self._cached_models:
            self._models.popitem(last=False)
