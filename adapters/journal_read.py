"""Read-only, bounded access to a node's JSON journals, for the status page (miner/status.py,
validator/status.py, trainer/status.py).

The roles' own journal code reads strictly (a file it cannot read is an error the node must stop
on). A status page must instead show what it can: here a missing file is None, and a file that is
half-written, foreign or too large is an `Unreadable` naming the file by its path relative to the
state directory, which the page shows as a note. Nothing here writes or creates anything, and the
listing helpers return only the newest `last` numbered entries, so a page costs the same however
long the node has run."""

from __future__ import annotations

import heapq
import json
import os
from pathlib import Path

# a journal file larger than this is not read (the largest, a validator report, is tens of kB)
MAX_FILE_BYTES = 4 * 1024 * 1024


class Unreadable(Exception):
    """A journal file the page cannot read: `where` is its path relative to the state directory."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def relative(path: Path, root: Path) -> str:
    """path relative to root (the page never shows an absolute path); the name alone if outside."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def numbered(directory: Path, *, suffix: str = "", last: int, root: Path | None = None) -> list[int]:
    """The numbers n of the entries named f"{n}{suffix}" in directory, the `last` largest, newest
    first ([] when the directory does not exist; Unreadable when it cannot be listed, named
    relative to `root`)."""
    def numbers():
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    stem = entry.name[: len(entry.name) - len(suffix)] if suffix else entry.name
                    if entry.name.endswith(suffix) and stem.isdigit() and len(stem) < 19:
                        yield int(stem)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise Unreadable(relative(directory, root) if root else Path(directory).name,
                             f"cannot be listed ({exc.strerror or type(exc).__name__})") from None

    return heapq.nlargest(max(0, last), numbers())


def newest(root: Path, sub: str, *, suffix: str = "", last: int, notes: list[str]) -> list[int]:
    """numbered(root / sub, ...), where a directory that cannot be listed adds a note and gives []."""
    try:
        return numbered(root / sub, suffix=suffix, last=last, root=root)
    except Unreadable as exc:
        notes.append(str(exc))
        return []


def read_bytes(path: Path, root: Path, *, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The file's bytes; None when it does not exist; Unreadable when it cannot be read or is larger
    than `limit`."""
    where = relative(path, root)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unreadable(where, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise Unreadable(where, f"larger than {limit} bytes, not read")
    return data


def read_json(path: Path, root: Path) -> dict | None:
    """The JSON object in the file; None when it does not exist; Unreadable when it is not one JSON
    object (half-written, truncated, foreign)."""
    data = read_bytes(path, root)
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise Unreadable(relative(path, root), "not JSON (half-written or foreign)") from None
    if not isinstance(doc, dict):
        raise Unreadable(relative(path, root), "not a JSON object")
    return doc


def read_text(path: Path, root: Path, *, limit: int = 4096) -> str | None:
    data = read_bytes(path, root, limit=limit)
    return None if data is None else data.decode("utf-8", "replace")


def field(doc: dict, key: str, kind, where: str, default=...):
    """doc[key] checked to be of `kind` (int fields accept no bool; float fields accept ints);
    Unreadable when missing (without a default) or of another type."""
    if key not in doc:
        if default is ...:
            raise Unreadable(where, f"no {key!r}")
        return default
    value = doc[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise Unreadable(where, f"{key!r} is not {'a number' if kind in (int, float) else names}")
    return value
