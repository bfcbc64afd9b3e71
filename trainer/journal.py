"""The trainer's crash-safe journal.

    state.pt               adapter, optimizer state, step count, trained windows, version; written
                           atomically after every applied or skipped step, so a SIGKILL loses at
                           most the step in progress, and a window is marked trained in the same
                           write as the update it produced (never trained twice, never half-trained)
    windows/<w>.json       what the window gave: rows, signal, dropped rows, the step's result
    published/<v>.json     checkpoint version v: built -> uploaded -> announced | withheld | expired
    published/<v>.manifest the manifest bytes of version v (so a restart announces the same bytes)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from adapters.files import atomic_write

PUBLISH_STAGES = ("built", "uploaded", "announced", "withheld", "expired")


class TrainerJournal:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        for sub in ("windows", "published"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- training state ----------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.pt"

    def load_state(self) -> dict | None:
        if not self.state_path.is_file():
            return None
        return torch.load(self.state_path, map_location="cpu", weights_only=False)

    def save_state(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.state_path, buf.getvalue())

    # ---- windows -----------------------------------------------------------------------------
    def save_window(self, window: int, record: dict) -> None:
        atomic_write(self.root / "windows" / f"{window}.json", json.dumps(record, sort_keys=True).encode())

    def window(self, window: int) -> dict | None:
        path = self.root / "windows" / f"{window}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def windows(self) -> list[dict]:
        out = [json.loads(p.read_text()) for p in (self.root / "windows").glob("*.json") if p.stem.isdigit()]
        return sorted(out, key=lambda r: r["window"])

    # ---- publications ------------------------------------------------------------------------
    def publication(self, version: int) -> dict | None:
        path = self.root / "published" / f"{version}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_publication(self, version: int, record: dict, manifest_bytes: bytes | None = None) -> None:
        if record["stage"] not in PUBLISH_STAGES:
            raise ValueError(record["stage"])
        if manifest_bytes is not None:
            atomic_write(self.root / "published" / f"{version}.manifest", manifest_bytes)
        atomic_write(self.root / "published" / f"{version}.json", json.dumps(record, sort_keys=True).encode())

    def manifest_bytes(self, version: int) -> bytes | None:
        path = self.root / "published" / f"{version}.manifest"
        return path.read_bytes() if path.is_file() else None

    def publications(self) -> list[dict]:
        out = [json.loads(p.read_text()) for p in (self.root / "published").glob("*.json") if p.stem.isdigit()]
        return sorted(out, key=lambda r: r["version"])
