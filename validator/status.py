"""What the validator's journal (validator/state.py) says about its last windows, for the status
page: each window's stage, checkpoint, per-miner verdicts and scores, and the weight set.

Pure reading: nothing is written or created (ValidatorState's constructor would create the
directory), no chain and no model. At most `last` windows are read, newest first. A file that is
missing or cannot be read leaves a note in `notes` (the page shows it), never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.journal_read import Unreadable, field, newest, numbered, read_json, read_text, relative
from validator.stages import JournalError, parse_stage

DEFAULT_LAST = 12


@dataclass(frozen=True)
class MinerVerdict:
    uid: int
    hotkey: str
    verdict: str  # what verification alone said
    reason: str  # the final reason (the verdict's, or copycat)
    detail: str
    score: int
    weight: int  # the report's weight (0..65535)
    credited_rollouts: int
    checked_groups: int
    commit_block: int | None
    bundle_hash: str


@dataclass(frozen=True)
class WeightSet:
    """The journaled intent of the weight set sent in `window`: it combines the scores of `windows`."""

    window: int
    windows: tuple[int, ...]
    weights: dict[int, int]  # uid -> weight


@dataclass(frozen=True)
class ValidatorWindow:
    window: int
    stage: str  # validator/stages.py Stage, or "verifying" (outcomes but no report yet)
    model_fingerprint: str = ""
    miners: tuple[MinerVerdict, ...] = ()
    outcomes: int = 0  # outcome files journaled (a window being verified shows its progress)
    weight_set: WeightSet | None = None
    counted_in: int | None = None  # the window whose weight set counted this one's scores
    checkpoint_error: str = ""


@dataclass(frozen=True)
class ValidatorSnapshot:
    windows: tuple[ValidatorWindow, ...]  # newest first
    notes: tuple[str, ...]  # journal files that could not be read

    @property
    def current(self) -> ValidatorWindow | None:
        return self.windows[0] if self.windows else None

    @property
    def model_fingerprint(self) -> str:
        """The checkpoint of the newest scored window ("" before any)."""
        return next((w.model_fingerprint for w in self.windows if w.model_fingerprint), "")


def validator_snapshot(state_dir: Path, *, last: int = DEFAULT_LAST) -> ValidatorSnapshot:
    root = Path(state_dir).expanduser()
    notes: list[str] = []
    out = []
    for w in newest(root, "windows", last=last, notes=notes):
        try:
            out.append(_window(root, w))
        except Unreadable as exc:
            notes.append(str(exc))
            out.append(ValidatorWindow(w, "unreadable"))
    return ValidatorSnapshot(tuple(out), tuple(notes))


def _window(root: Path, window: int) -> ValidatorWindow:
    wdir = root / "windows" / str(window)
    stage_text = read_text(wdir / "stage", root)
    try:
        stage = parse_stage(stage_text).value if stage_text is not None else "verifying"
    except JournalError:
        raise Unreadable(relative(wdir / "stage", root), "an unknown stage") from None
    outcomes = len(numbered(wdir / "outcomes", suffix=".json", last=100_000, root=root))
    counted_in = None
    if stage == "counted":
        text = read_text(wdir / "counted_in", root)
        counted_in = window if text is None else _int(text, relative(wdir / "counted_in", root))
    error = read_text(wdir / "checkpoint_error", root) or ""
    report = read_json(wdir / "report.json", root)
    if report is None:
        return ValidatorWindow(window, stage, outcomes=outcomes, counted_in=counted_in, checkpoint_error=error)
    where = relative(wdir / "report.json", root)
    miners = tuple(_verdict(m, where) for m in field(report, "miners", list, where))
    return ValidatorWindow(window, stage, field(report, "model_fingerprint", str, where, ""), miners, outcomes,
                           _weight_set(root, window), counted_in, error)


def _verdict(m, where: str) -> MinerVerdict:
    if not isinstance(m, dict):
        raise Unreadable(where, "a miner entry is not an object")
    groups = field(m, "checked_groups", list, where, [])
    block = m.get("commit_block")
    return MinerVerdict(field(m, "uid", int, where), field(m, "hotkey", str, where),
                        field(m, "verdict", str, where, ""), field(m, "reason", str, where),
                        field(m, "detail", str, where, ""), field(m, "score", int, where, 0),
                        field(m, "weight", int, where, 0), field(m, "credited_rollouts", int, where, 0),
                        len(groups), block if isinstance(block, int) and not isinstance(block, bool) else None,
                        field(m, "bundle_hash", str, where, ""))


def _weight_set(root: Path, window: int) -> WeightSet | None:
    path = root / "windows" / str(window) / "weights_intent.json"
    doc = read_json(path, root)
    if doc is None:
        return None
    where = relative(path, root)
    windows, uids, weights = (field(doc, k, list, where) for k in ("windows", "uids", "weights"))
    if len(uids) != len(weights) or not all(isinstance(x, int) for x in windows + uids + weights):
        raise Unreadable(where, "uids and weights are not lists of integers of one length")
    return WeightSet(window, tuple(windows), dict(zip(uids, weights)))


def _int(text: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise Unreadable(where, "not a window number") from None
