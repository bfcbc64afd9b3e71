"""Where the trainer reads scored windows from: the journal of a validator on the same machine
(validator/state.py). Each report is checked against the ledger entry that validator recorded on
chain (its SHA-256), so the trainer trains only on what the validator signed for publicly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.chain.base import Chain
from trainer.rows import TrainingDataError
from validator.state import FINISHED, ValidatorState
from verification.errors import ConfigError


class ValidatorJournal:
    def __init__(self, state_dir: Path, chain: Chain, validator_hotkey: str | None):
        root = Path(state_dir).expanduser()
        if not (root / "windows").is_dir():
            raise ConfigError(f"{root} is not a validator journal (no windows/ directory): pass the validator's "
                              f"--state-dir joined with its chain identity")
        self.state = ValidatorState(root)
        self.chain = chain
        self.validator_uid = chain.uid_of(validator_hotkey) if validator_hotkey else None
        if validator_hotkey and self.validator_uid is None:
            raise ConfigError(f"validator {validator_hotkey} is not registered on netuid {chain.netuid}")

    def scored_windows(self) -> list[int]:
        """Finished windows that have a report, oldest first."""
        windows = sorted(int(p.name) for p in (self.state.root / "windows").iterdir() if p.name.isdigit())
        return [w for w in windows if self.state.stage(w) in FINISHED and self.state.report_path(w).is_file()]

    def window(self, window: int) -> tuple[bytes, Callable[[int], bytes | None], bytes | None]:
        """(report bytes, uid -> bundle bytes, the ledger's report hash or None without a validator key).
        TrainingDataError when the validator recorded no ledger entry for the window."""
        report = self.state.report_path(window).read_bytes()

        def bundle(uid: int) -> bytes | None:
            path = self.state.bundle_path(window, uid)
            return path.read_bytes() if path.is_file() else None

        ledger = None
        if self.validator_uid is not None:
            entry = self.chain.ledger_entry(self.validator_uid, window)
            if entry is None:
                raise TrainingDataError(f"validator uid {self.validator_uid} has no ledger entry for window {window}")
            ledger = entry.report_hash
        return report, bundle, ledger
