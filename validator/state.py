"""The validator's crash-safe journal, one directory per window:

    windows/<w>/outcomes/<uid>.json   a miner's verification outcome (written as soon as it is known)
    windows/<w>/bundles/<uid>.rpb     the fetched bundle, kept for offline audit (the newest
                                      --keep-bundles finished windows; prune_bundles)
    windows/<w>/report.json           the scored window (canonical JSON; its SHA-256 goes on chain)
    windows/<w>/stage                 scored -> ledgered -> weights_set | weights_skipped, or
                                      checkpoint_failed (the window's checkpoint could not be
                                      verified: nothing verified, scored or written; detail in
                                      windows/<w>/checkpoint_error)

Every file is written to a temporary name, fsynced and renamed, so a crash leaves either the old
or the new version. A restart resumes from the stage on disk and re-checks the chain before any
write, so no outcome is recomputed and nothing is written to the chain twice."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.files import atomic_write
from verification.scoring import MinerOutcome

STAGES = ("scored", "ledgered", "weights_set", "weights_skipped", "checkpoint_failed")
# a window is finished once its weights were set, or skipped because the chain's weight rate limit
# had not passed (its scores then count in the next set: validator/service.py), or because the
# checkpoint in force could not be verified (the window is not scored at all)
FINISHED = ("weights_set", "weights_skipped", "checkpoint_failed")


class ValidatorState:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, window: int) -> Path:
        return self.root / "windows" / str(window)

    # outcomes
    def outcome(self, window: int, uid: int) -> tuple[MinerOutcome, dict] | None:
        path = self._dir(window) / "outcomes" / f"{uid}.json"
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
        o = doc["outcome"]
        outcome = MinerOutcome(o["uid"], o["hotkey"], o["ok"], o["reason"], o["detail"], o["commit_block"],
                               [bytes.fromhex(d) for d in o["row_digests"]],
                               [bytes.fromhex(d) for d in o["verified_rows"]],
                               [bytes.fromhex(d) for d in o.get("foreign_rows", [])])
        return outcome, doc["audit"]

    def save_outcome(self, window: int, outcome: MinerOutcome, audit: dict) -> None:
        doc = {
            "outcome": {
                "uid": outcome.uid, "hotkey": outcome.hotkey, "ok": outcome.ok, "reason": outcome.reason,
                "detail": outcome.detail, "commit_block": outcome.commit_block,
                "row_digests": [d.hex() for d in outcome.row_digests],
                "verified_rows": [d.hex() for d in outcome.verified_rows],
                "foreign_rows": [d.hex() for d in outcome.foreign_rows],
            },
            "audit": audit,
        }
        atomic_write(self._dir(window) / "outcomes" / f"{outcome.uid}.json", json.dumps(doc).encode())

    def bundle_path(self, window: int, uid: int) -> Path:
        return self._dir(window) / "bundles" / f"{uid}.rpb"

    def prune_bundles(self, before_window: int) -> int:
        """Delete the fetched bundles of finished windows before `before_window`; outcomes, reports
        and stages stay (they are small and are what the chain's report hash refers to). Returns how
        many bundle files were deleted."""
        removed = 0
        for wdir in (self.root / "windows").glob("*"):
            if wdir.name.isdigit() and int(wdir.name) < before_window and self.stage(int(wdir.name)) in FINISHED:
                for path in (wdir / "bundles").glob("*.rpb"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # report and stage
    def report_path(self, window: int) -> Path:
        return self._dir(window) / "report.json"

    def save_report(self, window: int, canonical: bytes) -> None:
        atomic_write(self.report_path(window), canonical)

    def stage(self, window: int) -> str | None:
        path = self._dir(window) / "stage"
        return path.read_text().strip() if path.is_file() else None

    def set_stage(self, window: int, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(stage)
        atomic_write(self._dir(window) / "stage", stage.encode())

    def save_checkpoint_error(self, window: int, detail: str) -> None:
        atomic_write(self._dir(window) / "checkpoint_error", detail.encode())
        self.set_stage(window, "checkpoint_failed")

    def checkpoint_error(self, window: int) -> str:
        path = self._dir(window) / "checkpoint_error"
        return path.read_text() if path.is_file() else ""

    def _newest_first(self) -> list[int]:
        return sorted((int(p.name) for p in (self.root / "windows").glob("*") if p.name.isdigit()), reverse=True)

    def newest_window(self) -> int | None:
        """The newest window with a stage (scored or later): windows are scored in order."""
        return next((w for w in self._newest_first() if self.stage(w) is not None), None)

    def unwritten_windows(self) -> list[int]:
        """Scored windows whose chain writes are not done (stage scored or ledgered), oldest first.
        Writes go in window order, so none is older than the newest window whose weights were set
        or skipped: the scan stops there."""
        out = []
        for w in self._newest_first():
            stage = self.stage(w)
            if stage in ("weights_set", "weights_skipped"):
                break
            if stage in ("scored", "ledgered"):
                out.append(w)
        return out[::-1]

    def skipped_run_before(self, window: int, limit: int | None = None) -> list[int]:
        """The windows right before `window` whose weights were skipped, oldest first (stops at the
        first window that set weights, never ran, or lacks its report, and after `limit` windows)."""
        run = []
        w = window - 1
        while (w >= 0 and (limit is None or len(run) < limit) and self.stage(w) == "weights_skipped"
               and self.report_path(w).is_file()):
            run.append(w)
            w -= 1
        return run[::-1]
