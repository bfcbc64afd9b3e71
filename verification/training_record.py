"""The training record of a checkpoint (docs/protocol.md section 16): what the trainer did between
the parent checkpoint and this one, precisely enough for anyone to re-run it. Pure: no torch.

The record is the file `training.json` of the checkpoint (canonical JSON, listed in the manifest's
files, so the trainer's signature binds it). It names the parent and the state the steps started
from, the validator whose reports supplied the rows, the settings of every step and of the gate,
the versions the staleness rule used, and one event per thing that happened, in order:

  * "window": a scored window the trainer read: the report's SHA-256 (the validator's ledger entry
    holds it), the SHA-256 of each bundle the trainer read, the rows trained in the order trained
    (each row's verified leaf, PRF("verified", uid, row digest): the leaf of the report's
    verified_root), the rows dropped as stale, and the outcome (a step applied, a step skipped by a
    circuit breaker, no step, or the window not trained) with the step's statistics;
  * "candidate": a candidate checkpoint built from the policy at that point, its generation params,
    the held-out rewards of the parent and the candidate (per rollout, micro-units), when the gate
    also measured greedy decoding the per-problem greedy correctness of both (0 or 1), and the
    gate's stage: withheld, expired (it could not be published) or announced (the last event: this
    checkpoint);
  * "return_to_anchor": the policy and optimizer went back to the state the record started from.

Floats are float.hex() strings, so the record has one encoding. Parsing checks shape and bounds
only; whether the record replays is trainer/replay.py's question."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from verification.canonical import canonical_json
from verification.constants import MAX_JSON_DEPTH, MAX_TRAINING_RECORD_BYTES
from verification.errors import TrainingRecordError
from verification.generation import GenerationParams
from verification.json_depth import nesting_depth

RECORD_FORMAT = "rollproof-training/1"
TRAINING_FILE = "training.json"  # the record, beside the adapter in the manifest's files
OPTIMIZER_FILE = "optimizer.safetensors"  # the optimizer state after the last step of the record
START_FILE = "start.safetensors"  # version 1 only: the adapter the first step started from
DATA_DIR = "data"  # reports and bundles the record names: <checkpoint dir>/data/<sha256 hex>

WINDOW, CANDIDATE, RETURN_TO_ANCHOR = "window", "candidate", "return_to_anchor"
OUTCOMES = ("applied", "skipped", "no_step", "not_trained")
STAGES = ("withheld", "expired", "announced")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")
_HEXFLOAT = re.compile(r"^-?(0x[0-9a-f]\.[0-9a-f]*p[+-]\d+|0x0\.0p\+0|inf|nan)$")
_NAME = re.compile(r"^[a-z_]{1,40}$")
MAX_REASON_CHARS = 400


def hexfloat(x: float) -> str:
    return float(x).hex()


def from_hexfloat(s: str) -> float:
    if not isinstance(s, str) or not _HEXFLOAT.match(s) or float.fromhex(s).hex() != s:
        raise TrainingRecordError(f"{s!r} is not a float.hex() string (one encoding per float)")
    return float.fromhex(s)


@dataclass(frozen=True)
class WindowEvent:
    window: int
    report_sha256: str | None  # None: the trainer got no report (no ledger entry, say)
    bundles: dict[int, str]  # uid -> SHA-256 of the bundle bytes the trainer read
    outcome: str  # applied | skipped | no_step | not_trained
    reason: str  # the breakers that tripped, why no step ran, or why the window was not trained
    rows: tuple[str, ...]  # verified leaves of the trained rows, in the order trained
    dropped_stale: int
    step: dict[str, str] | None  # {"grad_norm", "clipped_share", "loss"} as hex floats (informative)

    def to_json(self) -> dict:
        return {"kind": WINDOW, "window": self.window, "report_sha256": self.report_sha256,
                "bundles": {str(u): h for u, h in sorted(self.bundles.items())}, "outcome": self.outcome,
                "reason": self.reason, "rows": list(self.rows), "dropped_stale": self.dropped_stale,
                "step": self.step}


@dataclass(frozen=True)
class CandidateEvent:
    version: int
    stage: str  # withheld | expired | announced
    generation: GenerationParams
    parent_rewards: tuple[int, ...]  # held-out reward per rollout (problem-major), micro-units
    candidate_rewards: tuple[int, ...]
    adapter_sha256: str  # SHA-256 of the candidate's adapter file (canonical bytes)
    # per held-out problem, 1 when the greedy completion earned the full reward, else 0; both empty:
    # the gate did not measure greedy decoding (the key is then absent from the JSON)
    parent_greedy: tuple[int, ...] = ()
    candidate_greedy: tuple[int, ...] = ()

    def to_json(self) -> dict:
        out = {"kind": CANDIDATE, "version": self.version, "stage": self.stage,
               "generation": self.generation.to_json(), "heldout": {
                   "parent": list(self.parent_rewards), "candidate": list(self.candidate_rewards)},
               "adapter_sha256": self.adapter_sha256}
        if self.parent_greedy or self.candidate_greedy:
            out["greedy"] = {"parent": list(self.parent_greedy), "candidate": list(self.candidate_greedy)}
        return out


@dataclass(frozen=True)
class ReturnToAnchor:
    def to_json(self) -> dict:
        return {"kind": RETURN_TO_ANCHOR}


Event = WindowEvent | CandidateEvent | ReturnToAnchor


@dataclass(frozen=True)
class TrainingRecord:
    netuid: int
    version: int  # the checkpoint's
    parent_fingerprint: str
    parent_version: int
    parent_manifest_sha256: str | None  # None when the parent is the base model (version 0)
    start_adapter_sha256: str  # the adapter the record starts from (the parent's, or START_FILE)
    start_optimizer_sha256: str | None  # None: a fresh optimizer (version 1)
    validator_uid: int
    validator_hotkey: str
    first_window: int  # the windows the record accounts for: first..last, inclusive
    last_window: int
    lineage: tuple[tuple[str, int], ...]  # (fingerprint, version), the parent first, then its parents
    settings: dict  # {"lora", "train", "trainer"}: trainer/record.py writes and reads it
    world_size: int  # processes the steps ran on (replay runs on one, within the tolerance)
    events: tuple[Event, ...] = field(default_factory=tuple)
    end_adapter_sha256: str = ""
    end_optimizer_sha256: str = ""

    def to_json(self) -> dict:
        return {
            "format": RECORD_FORMAT, "netuid": self.netuid, "version": self.version,
            "parent": {"fingerprint": self.parent_fingerprint, "version": self.parent_version,
                       "manifest_sha256": self.parent_manifest_sha256},
            "start": {"adapter_sha256": self.start_adapter_sha256, "optimizer_sha256": self.start_optimizer_sha256},
            "validator": {"uid": self.validator_uid, "hotkey": self.validator_hotkey},
            "windows": {"first": self.first_window, "last": self.last_window},
            "lineage": [{"fingerprint": f, "version": v} for f, v in self.lineage],
            "settings": self.settings, "world_size": self.world_size,
            "events": [e.to_json() for e in self.events],
            "end": {"adapter_sha256": self.end_adapter_sha256, "optimizer_sha256": self.end_optimizer_sha256},
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def windows(self) -> list[WindowEvent]:
        return [e for e in self.events if isinstance(e, WindowEvent)]

    def data_hashes(self) -> list[str]:
        """Every report and bundle SHA-256 the record names (each stored once under DATA_DIR)."""
        out: dict[str, None] = {}
        for e in self.windows():
            if e.report_sha256:
                out[e.report_sha256] = None
            for h in e.bundles.values():
                out[h] = None
        return list(out)


# ---- parsing -------------------------------------------------------------------------------------
def _need(cond: bool, what: str) -> None:
    if not cond:
        raise TrainingRecordError(f"training record: {what}")


def _int(v, what: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, f"{what} must be an integer in [{lo}, {hi}]")
    return v


def _hex32(v, what: str, nullable: bool = False) -> str | None:
    if v is None and nullable:
        return None
    _need(isinstance(v, str) and bool(_HEX32.match(v)), f"{what} must be 64 lowercase hex digits")
    return v


def _keys(obj, keys: set[str], what: str) -> dict:
    _need(isinstance(obj, dict) and set(obj) == keys, f"{what} must have exactly the keys {sorted(keys)}")
    return obj


def _rewards(v, what: str) -> tuple[int, ...]:
    _need(isinstance(v, list) and len(v) <= 1 << 16, f"{what} must be a list")
    return tuple(_int(r, what, 0, 1_000_000) for r in v)


def _window_event(e: dict) -> WindowEvent:
    _keys(e, {"kind", "window", "report_sha256", "bundles", "outcome", "reason", "rows", "dropped_stale", "step"},
          "a window event")
    bundles = e["bundles"]
    _need(isinstance(bundles, dict) and len(bundles) <= 1 << 16, "bundles must be an object")
    parsed = {}
    for uid, h in bundles.items():
        _need(isinstance(uid, str) and uid.isdigit() and str(int(uid)) == uid, "bundle uids must be decimal strings")
        parsed[int(uid)] = _hex32(h, "a bundle hash")
    _need(e["outcome"] in OUTCOMES, f"outcome must be one of {OUTCOMES}")
    _need(isinstance(e["reason"], str) and len(e["reason"]) <= MAX_REASON_CHARS, "reason must be a short string")
    _need(isinstance(e["rows"], list), "rows must be a list")
    rows = tuple(_hex32(r, "a row leaf") for r in e["rows"])
    step = e["step"]
    if step is not None:
        _keys(step, {"grad_norm", "clipped_share", "loss"}, "a step")
        stats = {k: from_hexfloat(v) for k, v in step.items()}
        # the trainer's non_finite breaker skips any step whose loss or gradient norm is not finite
        _need(e["outcome"] != "applied" or (math.isfinite(stats["grad_norm"]) and math.isfinite(stats["loss"])),
              "an applied step's loss and gradient norm are finite")
    _need((step is not None) == (e["outcome"] in ("applied", "skipped")), "a step is stated exactly when one ran")
    _need(bool(rows) == (step is not None), "rows are listed exactly when a step ran")
    return WindowEvent(_int(e["window"], "window"), _hex32(e["report_sha256"], "report_sha256", nullable=True),
                       parsed, e["outcome"], e["reason"], rows, _int(e["dropped_stale"], "dropped_stale"), step)


def _candidate_event(e: dict) -> CandidateEvent:
    keys = {"kind", "version", "stage", "generation", "heldout", "adapter_sha256"}
    _keys(e, keys | ({"greedy"} if isinstance(e, dict) and "greedy" in e else set()), "a candidate event")
    _need(e["stage"] in STAGES, f"stage must be one of {STAGES}")
    heldout = _keys(e["heldout"], {"parent", "candidate"}, "heldout")
    try:
        params = GenerationParams.from_json(e["generation"])
    except Exception as exc:  # EnvironmentSpecError and shape errors: one typed error
        raise TrainingRecordError(f"training record: candidate generation params: {exc}") from None
    parent, cand = _rewards(heldout["parent"], "held-out rewards"), _rewards(heldout["candidate"], "held-out rewards")
    _need(len(parent) == len(cand) and len(parent) > 0, "held-out rewards of parent and candidate pair up")
    greedy_parent, greedy_cand = (), ()
    if "greedy" in e:
        greedy = _keys(e["greedy"], {"parent", "candidate"}, "greedy")
        greedy_parent, greedy_cand = _correct(greedy["parent"]), _correct(greedy["candidate"])
        _need(len(greedy_parent) == len(greedy_cand) and len(greedy_parent) > 0,
              "greedy results of parent and candidate pair up")
    return CandidateEvent(_int(e["version"], "candidate version", 1), e["stage"], params, parent, cand,
                          _hex32(e["adapter_sha256"], "adapter_sha256"), greedy_parent, greedy_cand)


def _correct(v) -> tuple[int, ...]:
    _need(isinstance(v, list) and len(v) <= 1 << 16, "greedy results must be a list")
    return tuple(_int(c, "a greedy result", 0, 1) for c in v)


def parse_training_record(data: bytes) -> TrainingRecord:
    """Shape-check record bytes (canonical JSON, at most MAX_TRAINING_RECORD_BYTES). Raises
    TrainingRecordError."""
    _need(len(data) <= MAX_TRAINING_RECORD_BYTES, f"{len(data)} bytes, limit {MAX_TRAINING_RECORD_BYTES}")
    _need(nesting_depth(data) <= MAX_JSON_DEPTH, "nests too deep")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrainingRecordError(f"training record is not JSON: {exc}") from None
    _keys(obj, {"format", "netuid", "version", "parent", "start", "validator", "windows", "lineage", "settings",
                "world_size", "events", "end"}, "the record")
    _need(canonical_json(obj) == data, "not in canonical form")
    _need(obj["format"] == RECORD_FORMAT, f"format must be {RECORD_FORMAT!r}")
    parent = _keys(obj["parent"], {"fingerprint", "version", "manifest_sha256"}, "parent")
    start = _keys(obj["start"], {"adapter_sha256", "optimizer_sha256"}, "start")
    validator = _keys(obj["validator"], {"uid", "hotkey"}, "validator")
    windows = _keys(obj["windows"], {"first", "last"}, "windows")
    end = _keys(obj["end"], {"adapter_sha256", "optimizer_sha256"}, "end")
    version = _int(obj["version"], "version", 1)
    parent_version = _int(parent["version"], "parent version")
    _need(parent_version < version, "the parent's version is below this one")
    parent_manifest = _hex32(parent["manifest_sha256"], "parent manifest_sha256", nullable=True)
    start_optimizer = _hex32(start["optimizer_sha256"], "start optimizer_sha256", nullable=True)
    _need((parent_manifest is None) == (parent_version == 0) == (start_optimizer is None),
          "only a record whose parent is the base model has no parent manifest and a fresh optimizer")
    _need(isinstance(validator["hotkey"], str) and 1 <= len(validator["hotkey"]) <= 64, "validator hotkey")
    first, last = _int(windows["first"], "first window"), _int(windows["last"], "last window")
    _need(first <= last, "first window after the last")
    lineage = obj["lineage"]
    _need(isinstance(lineage, list) and 1 <= len(lineage) <= 1024, "lineage must list 1 to 1024 checkpoints")
    parsed_lineage = tuple((_hex32(_keys(x, {"fingerprint", "version"}, "lineage entry")["fingerprint"], "lineage"),
                            _int(x["version"], "lineage version")) for x in lineage)
    _need(parsed_lineage[0] == (parent["fingerprint"], parent_version), "the lineage starts with the parent")
    _need(all(a[1] > b[1] for a, b in zip(parsed_lineage, parsed_lineage[1:])), "lineage versions descend")
    settings = _keys(obj["settings"], {"lora", "train", "trainer"}, "settings")
    _need(all(isinstance(v, dict) for v in settings.values()), "settings are objects")
    events_json = obj["events"]
    _need(isinstance(events_json, list) and 1 <= len(events_json) <= 1 << 20, "events must be a non-empty list")
    events: list[Event] = []
    for e in events_json:
        _need(isinstance(e, dict) and e.get("kind") in (WINDOW, CANDIDATE, RETURN_TO_ANCHOR), "unknown event kind")
        if e["kind"] == WINDOW:
            events.append(_window_event(e))
        elif e["kind"] == CANDIDATE:
            events.append(_candidate_event(e))
        else:
            _keys(e, {"kind"}, "a return_to_anchor event")
            events.append(ReturnToAnchor())
    windows_seen = [e.window for e in events if isinstance(e, WindowEvent)]
    _need(windows_seen == sorted(set(windows_seen)), "window events are in increasing window order, once each")
    _need(all(first <= w <= last for w in windows_seen) and windows_seen and windows_seen[0] == first
          and windows_seen[-1] == last, "the window events span exactly first..last")
    candidates = [e for e in events if isinstance(e, CandidateEvent)]
    final = events[-1]
    _need(isinstance(final, CandidateEvent) and final.stage == "announced" and final.version == version,
          "the last event is this checkpoint, announced")
    _need(all(c.stage != "announced" for c in candidates[:-1]), "only the last candidate is announced")
    _need(all(a.version < b.version for a, b in zip(candidates, candidates[1:]))
          and candidates[0].version > parent_version, "candidate versions increase from above the parent's")
    _need(all(e.outcome != "applied" or e.reason == "applied" for e in events if isinstance(e, WindowEvent)),
          "an applied step's reason is \"applied\"")
    _need(final.adapter_sha256 == _hex32(end["adapter_sha256"], "end adapter_sha256"),
          "the announced candidate's adapter is the record's end")
    return TrainingRecord(
        _int(obj["netuid"], "netuid", 0, 65535), version, _hex32(parent["fingerprint"], "parent fingerprint"),
        parent_version, parent_manifest, _hex32(start["adapter_sha256"], "start adapter_sha256"), start_optimizer,
        _int(validator["uid"], "validator uid", 0, 65535), validator["hotkey"], first, last, parsed_lineage,
        {k: dict(v) for k, v in settings.items()}, _int(obj["world_size"], "world_size", 1, 4096), tuple(events),
        end["adapter_sha256"], _hex32(end["optimizer_sha256"], "end optimizer_sha256"))
