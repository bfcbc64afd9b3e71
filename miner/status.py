"""What the miner's journal (miner/service.py MinerState: `state_dir/windows/<w>.json`,
`state_dir/timing.json`) says about its last windows, for the status page: each window's stage,
bundle hash, location, groups and tokens; the checkpoint its newest kept bundle was generated with
(the header's model_fingerprint, read from the tail of `bundles/<w>.rpb`); and how validators scored it, from the score journal
(miner/scores.py: `scores/<w>.json`, each validator's ledger entry for window w, and
`scores/latest.json`, the last read of every validator's newest entry and weights).

Pure reading: nothing is written or created, no chain and no model. At most `last` windows are
read, newest first. A file that is missing or cannot be read leaves a note in `notes` (the page
shows it), never an exception."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from dataclasses import field as field_
from pathlib import Path

from adapters.journal_read import Unreadable, field, newest, read_json, relative

DEFAULT_LAST = 12


@dataclass(frozen=True)
class MinedWindow:
    window: int
    stage: str  # built | uploaded | committed | missed, or "unreadable"
    bundle_hash: str = ""
    location: str = ""  # where the bundle was uploaded (the page shows it without credentials)
    n_groups: int = 0
    n_tokens: int = 0
    detail: str = ""


@dataclass(frozen=True)
class WindowScore:
    """One validator's ledger entry for a window, as this miner's score (scores/<w>.json)."""

    validator_uid: int
    hotkey: str
    score: int | None
    scores_total: int | None
    score_share: float | None


@dataclass(frozen=True)
class Standing:
    """One validator's view of this miner at the last read (scores/latest.json): its newest ledger
    entry's score (None: no entry found) and the weight it sets now."""

    validator_uid: int
    hotkey: str
    scored_window: int | None
    score_share: float | None
    weight: int
    weight_share: float


@dataclass(frozen=True)
class MinerSnapshot:
    windows: tuple[MinedWindow, ...]  # newest first
    generation_blocks: int | None  # the last generation's measured blocks (timing.json)
    engine: str  # the engine that measured it
    skipped_windows: int  # windows skipped since for lack of time
    notes: tuple[str, ...]
    scores: dict[int, tuple[WindowScore, ...]] = field_(default_factory=dict)  # window -> validators' entries
    standing: tuple[Standing, ...] = ()
    uid: int | None = None  # this miner's uid at the last read of the scores
    read_in_window: int | None = None
    model_fingerprint: str = ""  # the checkpoint of the newest kept bundle ("" when none is kept)
    fingerprint_window: int | None = None  # that bundle's window

    @property
    def current(self) -> MinedWindow | None:
        return self.windows[0] if self.windows else None


def miner_snapshot(state_dir: Path, *, last: int = DEFAULT_LAST) -> MinerSnapshot:
    root = Path(state_dir).expanduser()
    notes: list[str] = []
    windows = []
    for w in newest(root, "windows", suffix=".json", last=last, notes=notes):
        try:
            windows.append(_window(root, w))
        except Unreadable as exc:
            notes.append(str(exc))
            windows.append(MinedWindow(w, "unreadable"))
    blocks, engine, skipped = None, "", 0
    try:
        timing = read_json(root / "timing.json", root)
        if timing is not None:
            where = relative(root / "timing.json", root)
            blocks = field(timing, "generation_blocks", int, where, None)
            engine = field(timing, "engine", str, where, "hf")
            skipped = field(timing, "skipped", int, where, 0)
    except Unreadable as exc:
        notes.append(str(exc))
    scores = {}
    for w in windows:
        try:
            entries = _window_scores(root, w.window)
        except Unreadable as exc:
            notes.append(str(exc))
            continue
        if entries:
            scores[w.window] = entries
    standing, uid, read_in = (), None, None
    try:
        standing, uid, read_in = _standing(root)
    except Unreadable as exc:
        notes.append(str(exc))
    fingerprint, fp_window = "", None
    for w in windows:  # newest first: the first kept bundle
        try:
            fingerprint = bundle_fingerprint(root, w.window)
        except Unreadable as exc:
            notes.append(str(exc))
            break
        if fingerprint:
            fp_window = w.window
            break
    return MinerSnapshot(tuple(windows), blocks, engine, skipped, tuple(notes), scores, standing, uid, read_in,
                         fingerprint, fp_window)


# a bundle is canonical JSON whose top-level keys sort as groups, header, signature: the header
# (under 1 kB) and the signature are the file's last bytes, and the header's model_fingerprint the
# file's last one
_TAIL_BYTES = 4096
_FINGERPRINT = re.compile(rb'"model_fingerprint":"([0-9a-f]{64})"')


def bundle_fingerprint(root: Path, window: int) -> str:
    """The model fingerprint (hex) in the header of the kept bundle of `window` ("" when the bundle
    is not kept, pruned or never built), read from the file's last bytes only."""
    path = root / "bundles" / f"{window}.rpb"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            tail = fh.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise Unreadable(relative(path, root), f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    found = _FINGERPRINT.findall(tail)
    if not found:
        raise Unreadable(relative(path, root), "no bundle header at its end (half-written or foreign)")
    return found[-1].decode()


def _window(root: Path, window: int) -> MinedWindow:
    path = root / "windows" / f"{window}.json"
    doc = read_json(path, root)
    where = relative(path, root)
    if doc is None:  # deleted between the listing and the read
        raise Unreadable(where, "vanished while read")
    if field(doc, "window", int, where) != window:
        raise Unreadable(where, "holds another window")
    return MinedWindow(window, field(doc, "stage", str, where), field(doc, "bundle_hash", str, where, ""),
                       field(doc, "location", str, where, ""), field(doc, "n_groups", int, where, 0),
                       field(doc, "n_tokens", int, where, 0), field(doc, "detail", str, where, ""))


def _optional(doc: dict, key: str, kind, where: str):
    return None if doc.get(key) is None else field(doc, key, kind, where)


def _window_scores(root: Path, window: int) -> tuple[WindowScore, ...]:
    path = root / "scores" / f"{window}.json"
    doc = read_json(path, root)
    if doc is None:
        return ()
    where = relative(path, root)
    validators = field(doc, "validators", dict, where)
    out = []
    for key, v in validators.items():
        if not key.isdigit() or not isinstance(v, dict):
            raise Unreadable(where, "a validator entry is not uid -> object")
        out.append(WindowScore(int(key), field(v, "hotkey", str, where, ""), _optional(v, "score", int, where),
                               _optional(v, "scores_total", int, where), _optional(v, "score_share", float, where)))
    return tuple(sorted(out, key=lambda s: s.validator_uid))


def _standing(root: Path) -> tuple[tuple[Standing, ...], int | None, int | None]:
    path = root / "scores" / "latest.json"
    doc = read_json(path, root)
    if doc is None:
        return (), None, None
    where = relative(path, root)
    out = []
    for v in field(doc, "validators", list, where):
        if not isinstance(v, dict):
            raise Unreadable(where, "a validator entry is not an object")
        out.append(Standing(field(v, "validator_uid", int, where), field(v, "hotkey", str, where, ""),
                            _optional(v, "scored_window", int, where), _optional(v, "score_share", float, where),
                            field(v, "weight", int, where, 0), field(v, "weight_share", float, where, 0.0)))
    return tuple(out), _optional(doc, "uid", int, where), _optional(doc, "read_in_window", int, where)
