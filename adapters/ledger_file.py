"""Ledger entries from a file, for offline audits: one JSON object a line, as `rollproof localnet`
writes to WORKDIR/ledger.jsonl and `rollproof chain ledger` prints (validator_uid, window, uids,
scores, verified_root and report_hash as hex, block). It answers `ledger_entry` like a chain, so a
replay (trainer/replay.py) can check reports against entries an auditor took from the chain."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.chain.base import LedgerEntry
from adapters.fetch import read_local_file
from verification.errors import ConfigError, StorageError

MAX_LEDGER_FILE_BYTES = 256 * 1024 * 1024


class LedgerFile:
    def __init__(self, path: Path | str):
        try:
            text = read_local_file(Path(path).expanduser(), MAX_LEDGER_FILE_BYTES).decode("utf-8")
        except (StorageError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--ledger-file {path}: {exc}") from None
        self.entries: dict[tuple[int, int], LedgerEntry] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                entry = LedgerEntry(int(e["validator_uid"]), int(e["window"]), tuple(int(u) for u in e["uids"]),
                                    tuple(int(s) for s in e["scores"]), bytes.fromhex(e["verified_root"]),
                                    bytes.fromhex(e["report_hash"]), int(e.get("block", 0)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"--ledger-file {path}, line {n}: not a ledger entry ({exc})") from None
            if len(entry.report_hash) != 32 or len(entry.verified_root) != 32:
                raise ConfigError(f"--ledger-file {path}, line {n}: hashes must be 32 bytes")
            self.entries[(entry.validator_uid, entry.window)] = entry

    def ledger_entry(self, validator_uid: int, window: int) -> LedgerEntry | None:
        return self.entries.get((validator_uid, window))
