"""Writing a checkpoint's training record while training (docs/protocol.md section 16).

The trainer keeps a `RecordBuilder` for the span since its anchor (the newest announced checkpoint,
or the fresh adapter before any): every window it reads, every candidate it builds and every
return to the anchor become events, and the reports and bundles it read are kept, content
addressed, in its journal. When a candidate is announced, `files_for` turns the span into the
files a checkpoint carries (training.json, optimizer.safetensors, and start.safetensors for version
1) plus the data the record names; the next span starts from that checkpoint.

Settings are written with floats as float.hex() strings (`settings_json`) and read back exactly
(`settings_from_json`), so a replay runs with the very values the trainer ran with."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from adapters.files import atomic_write
from trainer.policy import LoraSettings
from trainer.step import StepResult, TrainConfig
from verification.errors import TrainingRecordError
from verification.generation import GenerationParams
from verification.training_record import (
    CandidateEvent,
    ReturnToAnchor,
    TrainingRecord,
    WindowEvent,
    from_hexfloat,
    hexfloat,
)

TRAINER_SETTINGS = ("publish_every", "max_staleness", "heldout_problems", "heldout_rollouts", "gate_margin",
                    "raise_difficulty_above", "reset_on_withheld")


def _encode(v):
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return hexfloat(v)
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    raise TypeError(f"cannot encode setting {v!r}")


def _decode(v, like):
    """v as the type of `like` (the default value of that setting; None: an optional float). A
    float is a finite float.hex() string, so every setting has one encoding and a replay runs with
    the very value the trainer ran with; anything else is TrainingRecordError."""
    if isinstance(like, bool):
        if not isinstance(v, bool):
            raise TrainingRecordError(f"setting {v!r} must be a boolean")
        return v
    if isinstance(like, list):  # target_modules: a list of names
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise TrainingRecordError(f"setting {v!r} must be a list of names")
        return list(v)
    if isinstance(like, tuple):
        if not isinstance(v, list) or len(v) != len(like):
            raise TrainingRecordError(f"setting {v!r} must be a list of {len(like)}")
        return tuple(_decode(x, y) for x, y in zip(v, like))
    if isinstance(like, float) or like is None:
        if v is None and like is None:
            return None
        x = from_hexfloat(v)
        if not math.isfinite(x):
            raise TrainingRecordError(f"setting {v!r} must be a finite float")
        return x
    if isinstance(like, int) and isinstance(v, int) and not isinstance(v, bool):
        return v
    raise TrainingRecordError(f"setting {v!r} has the wrong type")


def settings_json(lora: LoraSettings, train: TrainConfig, trainer: dict) -> dict:
    return {"lora": {k: _encode(v) for k, v in lora.to_dict().items()},
            "train": {f.name: _encode(getattr(train, f.name)) for f in fields(train)},
            "trainer": {k: _encode(trainer[k]) for k in TRAINER_SETTINGS}}


@dataclass(frozen=True)
class ReplaySettings:
    lora: LoraSettings
    train: TrainConfig
    publish_every: int
    max_staleness: int
    heldout_problems: int
    heldout_rollouts: int
    gate_margin: float
    raise_difficulty_above: float | None
    reset_on_withheld: bool


def settings_from_json(s: dict) -> ReplaySettings:
    try:
        lora_defaults = LoraSettings().to_dict()
        if set(s["lora"]) != set(lora_defaults):
            raise TrainingRecordError("LoRA settings must have exactly the keys " + str(sorted(lora_defaults)))
        lora = LoraSettings.from_dict({k: _decode(v, lora_defaults[k]) for k, v in s["lora"].items()})
        train_defaults = TrainConfig()
        names = {f.name for f in fields(TrainConfig)}
        if set(s["train"]) != names:
            raise TrainingRecordError("train settings must have exactly the keys " + str(sorted(names)))
        train = TrainConfig(**{k: _decode(v, getattr(train_defaults, k)) for k, v in s["train"].items()})
        t = s["trainer"]
        if set(t) != set(TRAINER_SETTINGS):
            raise TrainingRecordError("trainer settings must have exactly the keys " + str(sorted(TRAINER_SETTINGS)))
        out = ReplaySettings(lora, train, _decode(t["publish_every"], 1), _decode(t["max_staleness"], 1),
                             _decode(t["heldout_problems"], 1), _decode(t["heldout_rollouts"], 1),
                             _decode(t["gate_margin"], 0.0), _decode(t["raise_difficulty_above"], None),
                             _decode(t["reset_on_withheld"], True))
        if not (1 <= out.heldout_problems <= 1 << 16 and 1 <= out.heldout_rollouts <= 64 and out.max_staleness >= 0
                and out.publish_every >= 1 and out.gate_margin >= 0):
            raise TrainingRecordError("training record settings out of range")
    except TrainingRecordError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TrainingRecordError(f"training record settings: {exc}") from None
    return out


def step_json(step: StepResult) -> dict:
    return {"grad_norm": hexfloat(step.grad_norm), "clipped_share": hexfloat(step.clipped_share),
            "loss": hexfloat(step.loss)}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RecordBuilder:
    """The events since the anchor, and where the data they name is kept (journal/data/<sha256>)."""

    data_dir: Path
    first_window: int | None = None
    last_window: int | None = None
    events: list = field(default_factory=list)

    def keep(self, data: bytes) -> str:
        """Store data content-addressed (once); returns its SHA-256 hex."""
        h = sha256_hex(data)
        path = Path(self.data_dir) / h
        if not path.is_file():
            atomic_write(path, data)
        return h

    def data(self, h: str) -> bytes:
        return (Path(self.data_dir) / h).read_bytes()

    def window(self, event: WindowEvent) -> None:
        self.events.append(event)
        self.first_window = event.window if self.first_window is None else self.first_window
        self.last_window = event.window

    def candidate(self, event: CandidateEvent) -> None:
        self.events.append(event)

    def return_to_anchor(self) -> None:
        self.events.append(ReturnToAnchor())

    # ---- persistence (inside the trainer's atomic state write) -------------------------------
    def to_state(self) -> dict:
        return {"first_window": self.first_window, "last_window": self.last_window,
                "events": [e.to_json() for e in self.events]}

    @classmethod
    def from_state(cls, data_dir: Path, state: dict | None) -> RecordBuilder:
        out = cls(Path(data_dir))
        if not state:
            return out
        from verification.training_record import _candidate_event, _window_event

        out.first_window, out.last_window = state["first_window"], state["last_window"]
        for e in state["events"]:
            out.events.append(_window_event(e) if e["kind"] == "window" else
                              _candidate_event(e) if e["kind"] == "candidate" else ReturnToAnchor())
        return out

    def record(self, **kw) -> TrainingRecord:
        return TrainingRecord(first_window=self.first_window, last_window=self.last_window,
                              events=tuple(self.events), **kw)


def candidate_event(version: int, stage: str, params: GenerationParams, parent_rewards, candidate_rewards,
                    adapter_bytes: bytes, parent_greedy=(), candidate_greedy=()) -> CandidateEvent:
    """parent_greedy, candidate_greedy: per held-out problem, whether the greedy completion was
    correct (empty: the gate did not measure greedy decoding)."""
    return CandidateEvent(version, stage, params, tuple(int(r) for r in parent_rewards),
                          tuple(int(r) for r in candidate_rewards), sha256_hex(adapter_bytes),
                          tuple(int(bool(c)) for c in parent_greedy), tuple(int(bool(c)) for c in candidate_greedy))
