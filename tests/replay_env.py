"""Shared by tests/test_replay_distributed.py and tests/test_replay_restart.py: a validator journal
made by a local network without a trainer (so every window's rows are of the base model and any
trainer may train on all of them), the ledger entries that run's chain recorded, and replaying
every checkpoint a trainer published to a file store as a node would (trainer/replay_node.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.chain.base import LedgerEntry
from adapters.checkpoints import fetch_checkpoint
from adapters.fetch import Fetcher
from trainer.replay import ReplayReport
from trainer.replay_node import CheckpointReplayer
from verification.checkpoint import Announcement, manifest_hash, parse_manifest
from verification.model import LoadedModel

TRAINER_URI = "//t"  # the trainer key of tests/torchrun_publish.py and the restart test


class RecordedLedger:
    """The score ledger of a finished run: its chain's ScoresRecorded events (chain.ledger_events()),
    answering ledger_entry(uid, window) as the chain did. The chain lived in the process that ran
    the network; a replay needs nothing else from it."""

    def __init__(self, events: list[dict]):
        self.entries = {(int(e["validator_uid"]), int(e["window"])): LedgerEntry(
            int(e["validator_uid"]), int(e["window"]), tuple(e["uids"]), tuple(e["scores"]), bytes(e["verified_root"]),
            bytes(e["report_hash"]), int(e["block"])) for e in events}

    def ledger_entry(self, validator_uid: int, window: int) -> LedgerEntry | None:
        return self.entries.get((validator_uid, window))


@dataclass
class Journal:
    """A validator journal (root / "validator") and its run's ledger and validator."""

    root: Path
    ledger: RecordedLedger
    validator: tuple[int, str]  # (uid, hotkey)

    @property
    def validator_dir(self) -> Path:
        return self.root / "validator"


def make_journal(lm: LoadedModel, root: Path, windows: int) -> Journal:
    """A local network of 2 honest miners and a validator (no trainer) over `windows` windows."""
    from rollproof.localnet import _key, run_localnet

    result = run_localnet(lm, root, windows=windows, n_groups=2, cheaters=False, train=False)
    assert result.ok, result.problems
    vuid = next(uid for uid, (_, kind) in result.names.items() if kind == "validator")
    return Journal(root, RecordedLedger(result.ledger), (vuid, _key("validator").ss58_address))


def run_localnet_keeping_chain(lm: LoadedModel, root: Path, **kwargs):
    """rollproof.localnet.run_localnet(lm, root, **kwargs), and the embedded chain it ran on (the
    run drops it; a replay or a later trainer needs its ledger entries and announcements).
    Returns (result, chain)."""
    from types import SimpleNamespace

    import pytest

    from rollproof import localnet

    chains = []
    real = localnet.EVMChain

    def embedded_chain(netuid):
        chains.append(real.embedded_chain(netuid))
        return chains[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(localnet, "EVMChain", SimpleNamespace(embedded_chain=embedded_chain))
        result = localnet.run_localnet(lm, root, **kwargs)
    return result, chains[0]


def published(store_root: Path) -> list[tuple[Announcement, str]]:
    """(announcement, trainer hotkey) of every checkpoint in a file store, oldest version first,
    built from the manifests (the announcing chain lived in the trainer's process)."""
    out = []
    for path in (Path(store_root) / "rollproof").glob("*/checkpoints/*/manifest.json"):
        data = path.read_bytes()
        m = parse_manifest(data)
        out.append((m.version, Announcement(m.from_window, bytes.fromhex(m.fingerprint), manifest_hash(data),
                                            path.as_uri(), 0), m.trainer_hotkey))
    return [(ann, hotkey) for _, ann, hotkey in sorted(out, key=lambda x: x[0])]


def replay_store(base: LoadedModel, store_root: Path, ledger, fingerprints: list[str] | None = None
                 ) -> dict[str, ReplayReport]:
    """Fetch and replay (parents first, as a node does) the given announced checkpoints (default:
    every one in the store) on one process; fingerprint hex -> its ReplayReport. Raises what the
    replay raises."""
    fetcher = Fetcher(file_roots=[Path(store_root)])
    replayer = CheckpointReplayer(ledger, base, fetcher)
    out = {}
    for ann, hotkey in published(store_root):
        fp = ann.fingerprint.hex()
        if fingerprints is not None and fp not in fingerprints:
            continue
        manifest, files = fetch_checkpoint(fetcher, ann, hotkey)
        out[fp] = replayer.judge(ann.location, manifest.to_bytes(), manifest, files)
    return out
