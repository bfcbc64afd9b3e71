"""The validator's crash-safe journal, one directory per window:

    windows/<w>/outcomes/<uid>.json   a miner's verification outcome (written as soon as it is known)
    windows/<w>/bundles/<uid>.rpb     the fetched bundle, kept for offline audit (the newest
                                      --keep-bundles windows whose writes are done; prune_bundles)
    windows/<w>/report.json           the scored window (canonical JSON; its SHA-256 goes on chain)
    windows/<w>/stage                 the window's stage (validator/stages.py: scored -> ledgered ->
                                      weights_intent -> counted, or deferred -> counted | dropped,
                                      or checkpoint_failed; detail in windows/<w>/checkpoint_error)
    windows/<w>/weights_intent.json   write-ahead record of window w's weight set, journaled before
                                      the transaction: the windows it combines, its uids and weights
    windows/<w>/counted_in            the window whose weight set counted w's scores (absent: w)

Every file is written to a temporary name, fsynced and renamed, so a crash leaves either the old
or the new version. A restart resumes from the stage on disk and re-checks the chain before any
write (ledger entry present? weights window reached?), so no outcome is recomputed, nothing is
written to the chain twice, and a weight set that landed before a crash is recognised from its
intent and never sent again.

Every stage a window enters is counted once in rollproof_validator_window_stages by set_stage, the
one place a stage is written (writing the stage a window already has, as a resumed step does, is
not a transition and is not counted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adapters.files import atomic_write
from verification.scoring import MinerOutcome

from adapters.telemetry import metrics_of
from validator.metrics import ValidatorMetrics
from validator.stages import UNWRITTEN, WRITES_DONE, JournalError, Stage, check_transition, parse_stage

# windows whose chain writes are done (the trainer reads their reports: trainer/sources.py)
FINISHED = WRITES_DONE


@dataclass(frozen=True)
class WeightsIntent:
    """The weight set for `window`, journaled before it is sent: it combines the scores of
    `windows` (oldest first, `window` last) into `uids` and `weights`."""

    window: int
    windows: tuple[int, ...]
    uids: tuple[int, ...]
    weights: tuple[int, ...]


class ValidatorState:
    def __init__(self, root: Path, metrics: ValidatorMetrics | None = None):
        """metrics: where stage transitions are counted (None: a private registry, for readers)."""
        self.root = Path(root).expanduser()
        self.metrics = metrics if metrics is not None else metrics_of(ValidatorMetrics, None)
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
            if wdir.name.isdigit() and int(wdir.name) < before_window and self.stage(int(wdir.name)) in WRITES_DONE:
                for path in (wdir / "bundles").glob("*.rpb"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # report and stage
    def report_path(self, window: int) -> Path:
        return self._dir(window) / "report.json"

    def save_report(self, window: int, canonical: bytes) -> None:
        atomic_write(self.report_path(window), canonical)

    def stage(self, window: int) -> Stage | None:
        path = self._dir(window) / "stage"
        return parse_stage(path.read_text(), str(path)) if path.is_file() else None

    def set_stage(self, window: int, stage: Stage) -> None:
        """Journal the window's new stage; JournalError when the state machine forbids the change.
        A change of stage is counted (window_stages) once it is on disk."""
        stage = Stage(stage)
        current = self.stage(window)
        check_transition(window, current, stage)
        atomic_write(self._dir(window) / "stage", stage.value.encode())
        if stage != current:
            self.metrics.window_stages.labels(stage.value).inc()

    # the weight set's write-ahead intent, and where each window's scores were counted
    def save_intent(self, intent: WeightsIntent) -> None:
        doc = {"window": intent.window, "windows": list(intent.windows), "uids": list(intent.uids),
               "weights": list(intent.weights)}
        atomic_write(self._dir(intent.window) / "weights_intent.json", json.dumps(doc).encode())
        self.set_stage(intent.window, Stage.WEIGHTS_INTENT)

    def intent(self, window: int) -> WeightsIntent | None:
        path = self._dir(window) / "weights_intent.json"
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_bytes())
            intent = WeightsIntent(int(doc["window"]), tuple(map(int, doc["windows"])), tuple(map(int, doc["uids"])),
                                   tuple(map(int, doc["weights"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{path}: unreadable weights intent ({exc})") from None
        if intent.window != window or not intent.windows or intent.windows[-1] != window:
            raise JournalError(f"{path}: the intent is not window {window}'s own set")
        return intent

    def clear_intent(self, window: int) -> None:
        """Forget an intent whose set was never sent (the chain has no call for it): a later set
        that happens to carry the same weights is then never taken for it."""
        (self._dir(window) / "weights_intent.json").unlink(missing_ok=True)

    def mark_counted(self, window: int, in_window: int) -> None:
        """Journal that window's scores are in the weight set of `in_window`, as the chain shows."""
        if in_window != window:
            atomic_write(self._dir(window) / "counted_in", str(in_window).encode())
        self.set_stage(window, Stage.COUNTED)

    def counted_in(self, window: int) -> int | None:
        """The window whose weight set counted window's scores (None: not counted)."""
        if self.stage(window) != Stage.COUNTED:
            return None
        path = self._dir(window) / "counted_in"
        if not path.is_file():
            return window
        try:
            return int(path.read_text())
        except ValueError:
            raise JournalError(f"{path}: not a window number") from None

    def save_checkpoint_error(self, window: int, detail: str) -> None:
        atomic_write(self._dir(window) / "checkpoint_error", detail.encode())
        self.set_stage(window, Stage.CHECKPOINT_FAILED)

    def checkpoint_error(self, window: int) -> str:
        path = self._dir(window) / "checkpoint_error"
        return path.read_text() if path.is_file() else ""

    def _newest_first(self) -> list[int]:
        return sorted((int(p.name) for p in (self.root / "windows").glob("*") if p.name.isdigit()), reverse=True)

    def newest_window(self) -> int | None:
        """The newest window with a stage (scored or later): windows are scored in order."""
        return next((w for w in self._newest_first() if self.stage(w) is not None), None)

    def windows(self) -> list[int]:
        """Every window the journal holds a stage for, oldest first."""
        return [w for w in self._newest_first()[::-1] if self.stage(w) is not None]

    def unwritten_windows(self) -> list[int]:
        """Scored windows whose chain writes are not done (stage scored, ledgered or weights_intent),
        oldest first. Writes go in window order, so none is older than the newest window whose
        writes are done (deferred, counted or dropped): the scan stops there."""
        out = []
        for w in self._newest_first():
            stage = self.stage(w)
            if stage in WRITES_DONE and stage != Stage.CHECKPOINT_FAILED:
                break
            if stage in UNWRITTEN:
                out.append(w)
        return out[::-1]

    def deferred_before(self, window: int) -> list[int]:
        """The deferred windows before `window` that no set counted yet, oldest first: every one back
        to the newest counted or dropped window (a set combines every deferred window before it, so
        none older waits), over gaps (windows that never ran) and checkpoint_failed windows."""
        out = []
        for w in self._newest_first():
            if w >= window:
                continue
            stage = self.stage(w)
            if stage in (Stage.COUNTED, Stage.DROPPED):
                break
            if stage == Stage.DEFERRED:
                out.append(w)
        return out[::-1]
