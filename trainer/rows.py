"""Training rows: only rows a validator accepted, each tied to that validator's report.

For one window the trainer takes a validator's report (canonical JSON; its SHA-256 must equal the
report hash the validator recorded in the score ledger, when a ledger is given) and the bundles
that validator fetched. For every miner the report lists with verdict "ok" it checks the bundle
against the committed hash the report names, recomputes the verified rows (rows of checked groups
whose rollout verdict is "ok") and their Merkle root exactly as verification.scoring.verified_root
does, and compares it with the report's verified_root. A mismatch rejects the whole report: no row
is trained on without its verdict. Rows of miners that scored zero are not trained on. Equal
(prompt, completion) pairs in different groups are all kept: every group's problem is its miner's
own (docs/protocol.md section 13), so equal rows are independent samples of the policy on a prompt
two problems share, and each group's advantages count its own rows.

Staleness: rows generated under a checkpoint more than `max_staleness` versions older than the
trainer's current version are dropped and counted (prime-rl's max_off_policy_steps)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from verification.bundle import bundle_hash, decode_bundle, row_digest
from verification.constants import ADVANTAGE_SCALE
from verification.environments.base import REWARD_SCALE
from verification.errors import BundleFormatError, RollproofError
from verification.merkle import merkle_root
from verification.prf import prf


class TrainingDataError(RollproofError):
    """A report or bundle cannot be tied to a verdict: nothing from it is trained on."""

    code = "training_data"


@dataclass
class VerifiedRow:
    window: int
    uid: int
    group: int
    rollout: int
    prompt: list[int]
    completion: list[int]
    logprobs: np.ndarray  # behaviour policy's verified per-token logprobs (float32)
    advantage: float  # verified advantage / ADVANTAGE_SCALE
    reward: int
    fingerprint: str  # checkpoint the row was generated with
    leaf: bytes = b""  # PRF("verified", uid, row digest): the row's leaf of the report's verified_root


@dataclass
class WindowRows:
    window: int
    fingerprint: str
    rows: list[VerifiedRow] = field(default_factory=list)
    groups: int = 0  # groups with at least one trained row
    groups_with_signal: int = 0  # of those, groups whose rewards differ
    groups_solved: int = 0  # of those, groups whose every row has the full reward
    groups_failed: int = 0  # of those, groups whose rows all have the same reward below full
    dropped_unscored: int = 0

    @property
    def signal_rate(self) -> float:
        return self.groups_with_signal / self.groups if self.groups else 0.0


def accepted_rows(report_bytes: bytes, bundle_bytes: Callable[[int], bytes | None],
                  ledger_report_hash: bytes | None = None) -> WindowRows:
    """The trainable rows of one window's report. Raises TrainingDataError when the report does not
    match its ledger entry or its verified_root."""
    if ledger_report_hash is not None and hashlib.sha256(report_bytes).digest() != ledger_report_hash:
        raise TrainingDataError("the report does not hash to the validator's ledger entry")
    try:
        report = json.loads(report_bytes)
        window, fingerprint, miners = report["window"], report["model_fingerprint"], report["miners"]
        root = bytes.fromhex(report["verified_root"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingDataError(f"not a validator report: {exc}") from None
    out = WindowRows(window, fingerprint)
    leaves: list[bytes] = []
    for m in sorted(miners, key=lambda m: m["uid"]):
        if m.get("verdict") != "ok":
            continue
        data = bundle_bytes(m["uid"])
        if data is None or bundle_hash(data).hex() != m.get("bundle_hash"):
            raise TrainingDataError(f"the bundle of uid {m['uid']} is missing or is not the one the report names")
        try:
            bundle = decode_bundle(data)
        except BundleFormatError as exc:
            raise TrainingDataError(f"the bundle of uid {m['uid']} does not parse: {exc}") from None
        if bundle.header.model_fingerprint != fingerprint or bundle.header.window != window:
            raise TrainingDataError(f"the bundle of uid {m['uid']} is not of this window and checkpoint")
        ok = {(r["group"], r["rollout"]) for r in m.get("rollouts", []) if r["reason"] == "ok"}
        trained_groups: dict[int, set[int]] = {}
        for g in bundle.groups:
            for r in g.rollouts:
                if (g.index, r.index) not in ok:
                    continue
                leaf = prf("verified", m["uid"], row_digest(g.index, g.environment, g.prompt, r))
                leaves.append(leaf)
                if m.get("weight", 0) <= 0:
                    out.dropped_unscored += 1
                    continue
                out.rows.append(VerifiedRow(window, m["uid"], g.index, r.index, [int(t) for t in g.prompt],
                                            [int(t) for t in r.completion], np.asarray(r.logprobs, np.float32),
                                            r.advantage / ADVANTAGE_SCALE, int(r.reward), fingerprint, leaf))
                trained_groups.setdefault(g.index, set()).add(int(r.reward))
        out.groups += len(trained_groups)
        out.groups_with_signal += sum(1 for rewards in trained_groups.values() if len(rewards) > 1)
        out.groups_solved += sum(1 for rewards in trained_groups.values() if rewards == {REWARD_SCALE})
        out.groups_failed += sum(1 for rewards in trained_groups.values()
                                 if len(rewards) == 1 and max(rewards) < REWARD_SCALE)
    if merkle_root(leaves) != root:
        raise TrainingDataError("the verified rows do not hash to the report's verified_root")
    return out


def drop_stale(rows: list[VerifiedRow], versions: dict[str, int], current_version: int,
               max_staleness: int) -> tuple[list[VerifiedRow], int]:
    """Rows whose checkpoint is at most max_staleness versions behind current_version, and how
    many were dropped. A row of a checkpoint the trainer does not know is dropped too."""
    kept = [r for r in rows if r.fingerprint in versions and current_version - versions[r.fingerprint] <= max_staleness]
    return kept, len(rows) - len(kept)
