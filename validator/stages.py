"""The validator journal's window stages: one typed state machine, the only place that says which
stage may follow which and which stages are finished (WRITES_DONE, TERMINAL) (validator/state.py stores them,
validator/service.py drives them).

    (none) ──> scored ──> ledgered ──> weights_intent ──> counted
      │                      │  │           │                 ^
      │                      │  │           v                 │
      │                      │  └───────> deferred ───────────┤
      │                      │               │                │
      │                      │               v                │
      │                      └──────────> dropped    (ledgered ─> counted: a set that
      v                                               landed without a journaled intent)
    checkpoint_failed

- scored: the report is journaled; ledgered: its score-ledger entry is on chain.
- weights_intent: write-ahead record of the weight set for this window (windows/<w>/weights_intent.json
  names every window the set combines and the exact uids and weights) before the transaction is sent.
- counted: the window's scores are in a weight set that the chain shows (windows/<w>/counted_in
  names the set's window; absent: its own).
- deferred: ledgered, its scores wait for a later window's set (the chain's weight rate limit had
  not passed, or a newer window was scored before this one's set landed).
- dropped: deferred too long: more than MAX_COMBINED_WINDOWS - 1 newer deferred windows, or a later
  set landed without it (logged, one line each).
- checkpoint_failed: the window's checkpoint could not be verified; nothing was scored or written.

Journals written before this module used `weights_set` (read as counted in its own window) and
`weights_skipped` (read as deferred: a later window's set combines it unless a set after it already
landed, which ends the scan back). Any other stage text is a JournalError naming the file."""

from __future__ import annotations

from enum import Enum

from verification.errors import RollproofError


class JournalError(RollproofError):
    """The validator journal holds what this version cannot read, or a caller asked for a stage
    change the state machine forbids (a bug, never bad input from the network)."""

    code = "journal"


class Stage(str, Enum):
    SCORED = "scored"
    LEDGERED = "ledgered"
    WEIGHTS_INTENT = "weights_intent"
    DEFERRED = "deferred"
    COUNTED = "counted"
    DROPPED = "dropped"
    CHECKPOINT_FAILED = "checkpoint_failed"

    def __str__(self) -> str:
        return self.value


# stage texts of journals written before this state machine, and what they mean now
LEGACY_STAGES = {"weights_set": Stage.COUNTED, "weights_skipped": Stage.DEFERRED}

# None: the window has no stage yet (never scored, or a window that never ran)
TRANSITIONS: dict[Stage | None, frozenset[Stage]] = {
    None: frozenset({Stage.SCORED, Stage.CHECKPOINT_FAILED}),
    Stage.SCORED: frozenset({Stage.LEDGERED}),
    Stage.LEDGERED: frozenset({Stage.WEIGHTS_INTENT, Stage.DEFERRED, Stage.COUNTED, Stage.DROPPED}),
    Stage.WEIGHTS_INTENT: frozenset({Stage.COUNTED, Stage.DEFERRED}),
    Stage.DEFERRED: frozenset({Stage.COUNTED, Stage.DROPPED}),
    Stage.COUNTED: frozenset(),
    Stage.DROPPED: frozenset(),
    Stage.CHECKPOINT_FAILED: frozenset(),
}

# no chain write is pending for the window (its bundles may be pruned; the write loop passes it)
WRITES_DONE = frozenset({Stage.DEFERRED, Stage.COUNTED, Stage.DROPPED, Stage.CHECKPOINT_FAILED})
# nothing more will ever happen to the window
TERMINAL = frozenset({Stage.COUNTED, Stage.DROPPED, Stage.CHECKPOINT_FAILED})
# chain writes still to do: ledger entry, weight set
UNWRITTEN = frozenset({Stage.SCORED, Stage.LEDGERED, Stage.WEIGHTS_INTENT})


def parse_stage(text: str, where: str = "stage") -> Stage:
    """The stage a journal's stage file holds (legacy names mapped); JournalError for anything else."""
    text = text.strip()
    if text in LEGACY_STAGES:
        return LEGACY_STAGES[text]
    try:
        return Stage(text)
    except ValueError:
        raise JournalError(f"{where}: unknown stage {text[:40]!r} (written by a newer rollproof? known: "
                           f"{', '.join(s.value for s in Stage)}, and the legacy "
                           f"{', '.join(LEGACY_STAGES)})") from None


def check_transition(window: int, current: Stage | None, new: Stage) -> None:
    """JournalError unless `new` may follow `current` (writing the current stage again is a no-op a
    resumed step may do, and allowed)."""
    if new == current:
        return
    if new not in TRANSITIONS[current]:
        raise JournalError(f"window {window}: stage {current or 'none'} cannot become {new} "
                           f"(allowed: {', '.join(sorted(s.value for s in TRANSITIONS[current])) or 'none'})")
