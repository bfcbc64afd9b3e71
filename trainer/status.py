"""What the trainer's journal (trainer/journal.py: `windows/<w>.json`, `published/<v>.json`) says,
for the status page: per window the rows, signal rate, mean reward and the step's result; per
checkpoint its stage, held-out reward (sampled, and greedy where journaled) against its parent and
the chance baseline, from_window and bytes; the base model's fingerprint from the newest checkpoint's manifest (`published/<v>.manifest`).

Pure reading: nothing is written or created (TrainerJournal's constructor would create its
directories, and it loads torch), no chain and no model. At most `last` windows and `last`
checkpoints are read, newest first. A file that is missing or cannot be read leaves a note in
`notes` (the page shows it), never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.publication import Publication
from adapters.journal_read import Unreadable, field, newest, read_json, relative

DEFAULT_LAST = 24


@dataclass(frozen=True)
class TrainedWindow:
    window: int
    rows: int  # rows trained on
    groups: int
    signal_rate: float  # share of groups with reward variance
    mean_reward: float  # of the window's verified rows, 0..1
    dropped_stale: int
    applied: bool | None  # the step: applied, skipped (False), none ran (None)
    step_reason: str  # the step's reason, or the note why none ran
    grad_norm: float | None = None
    approx_kl: float | None = None


@dataclass(frozen=True)
class TrainerSnapshot:
    windows: tuple[TrainedWindow, ...]  # newest first
    checkpoints: tuple[Publication, ...]  # newest first
    notes: tuple[str, ...]
    base_fingerprint: str = ""  # the base model's (version 0), from the newest checkpoint's manifest

    @property
    def current(self) -> Publication | None:
        """The newest announced checkpoint (None: the base model is in force)."""
        return next((c for c in self.checkpoints if c.stage == "announced"), None)

    @property
    def newest_window(self) -> int | None:
        return self.windows[0].window if self.windows else None

    def versions(self) -> dict[str, int]:
        """fingerprint hex -> version of every journaled checkpoint read, and the base's (0)."""
        base = {self.base_fingerprint: 0} if self.base_fingerprint else {}
        return base | {c.fingerprint: c.version for c in self.checkpoints if c.fingerprint}


def trainer_snapshot(state_dir: Path, *, last: int = DEFAULT_LAST) -> TrainerSnapshot:
    root = Path(state_dir).expanduser()
    notes: list[str] = []
    windows, checkpoints = [], []
    for w in newest(root, "windows", suffix=".json", last=last, notes=notes):
        try:
            windows.append(_window(root, w))
        except Unreadable as exc:
            notes.append(str(exc))
    for v in newest(root, "published", suffix=".json", last=last, notes=notes):
        try:
            checkpoints.append(_checkpoint(root, v))
        except Unreadable as exc:
            notes.append(str(exc))
    base = ""
    if checkpoints:
        path = root / "published" / f"{checkpoints[0].version}.manifest"
        try:
            manifest = read_json(path, root)
            base = field(manifest, "base_fingerprint", str, relative(path, root), "") if manifest else ""
        except Unreadable as exc:
            notes.append(str(exc))
    return TrainerSnapshot(tuple(windows), tuple(checkpoints), tuple(notes), base)


def _read(root: Path, path: Path) -> tuple[dict, str]:
    doc, where = read_json(path, root), relative(path, root)
    if doc is None:  # deleted between the listing and the read
        raise Unreadable(where, "vanished while read")
    return doc, where


def _window(root: Path, window: int) -> TrainedWindow:
    doc, where = _read(root, root / "windows" / f"{window}.json")
    if field(doc, "window", int, where) != window:
        raise Unreadable(where, "holds another window")
    step = field(doc, "step", (dict, type(None)), where, None)
    note = field(doc, "note", str, where, "")
    applied = reason = grad = kl = None
    if step is not None:
        applied = field(step, "applied", bool, where)
        reason = field(step, "reason", str, where, "")
        grad = field(step, "grad_norm", float, where, None)
        kl = field(step, "approx_kl", float, where, None)
    return TrainedWindow(window, field(doc, "rows", int, where), field(doc, "groups", int, where),
                         field(doc, "signal_rate", float, where), field(doc, "mean_reward", float, where, 0.0),
                         field(doc, "dropped_stale", int, where, 0), applied, note or reason or "", grad, kl)


def _checkpoint(root: Path, version: int) -> Publication:
    doc, where = _read(root, root / "published" / f"{version}.json")
    if field(doc, "version", int, where) != version:
        raise Unreadable(where, "holds another version")
    return Publication(version, field(doc, "stage", str, where), field(doc, "fingerprint", str, where),
                            field(doc, "from_window", int, where), field(doc, "heldout", float, where),
                            field(doc, "parent_heldout", float, where), field(doc, "chance", float, where),
                            field(doc, "difference", float, where, 0.0), field(doc, "half_width", float, where, 0.0),
                            field(doc, "bytes", int, where, 0), field(doc, "note", str, where, ""),
                            _optional_float(doc, "greedy", where), _optional_float(doc, "parent_greedy", where))


def _optional_float(doc: dict, key: str, where: str) -> float | None:
    """A number or null; absent (journals written before it was measured): None."""
    return None if doc.get(key) is None else field(doc, key, float, where)
