"""What the miner's journal (miner/service.py MinerState: `state_dir/windows/<w>.json`,
`state_dir/timing.json`) says about its last windows, for the status page: each window's stage,
bundle hash, location, groups and tokens.

Pure reading: nothing is written or created, no chain and no model. At most `last` windows are
read, newest first. A file that is missing or cannot be read leaves a note in `notes` (the page
shows it), never an exception."""

from __future__ import annotations

from dataclasses import dataclass
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
class MinerSnapshot:
    windows: tuple[MinedWindow, ...]  # newest first
    generation_blocks: int | None  # the last generation's measured blocks (timing.json)
    engine: str  # the engine that measured it
    skipped_windows: int  # windows skipped since for lack of time
    notes: tuple[str, ...]

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
    return MinerSnapshot(tuple(windows), blocks, engine, skipped, tuple(notes))


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
