"""Window scoring: per-miner outcomes -> copycat de-duplication -> scores -> u16 weights, and the
Merkle root over verified rollouts that the score ledger records. Pure: the validator and an
offline auditor compute the same numbers from the same bundles and beacons."""

from __future__ import annotations

from dataclasses import dataclass, field

from verification.constants import SCORE_EXPONENT, U16_MAX
from verification.merkle import merkle_root
from verification.prf import prf


@dataclass
class MinerOutcome:
    """What verification concluded about one miner's commitment in one window."""

    uid: int
    hotkey: str
    ok: bool  # every checked rollout verified
    reason: str  # "ok" or the first failure's reason code
    detail: str = ""
    commit_block: int = 0
    row_digests: list[bytes] = field(default_factory=list)  # completion_digest of every row, bundle order
    verified_rows: list[bytes] = field(default_factory=list)  # row_digest of every checked, accepted row


@dataclass
class MinerScore:
    uid: int
    hotkey: str
    reason: str  # final reason: the verdict's, or "copycat"
    detail: str
    unique_rollouts: int
    copied_rollouts: int
    score: float
    weight: int = 0
    verdict: str = "ok"  # what verification alone said (an offline audit reproduces this)


def score_window(outcomes: list[MinerOutcome]) -> list[MinerScore]:
    """Scores in uid order. Rows already published by an earlier committer (block, then uid) count
    for the earlier one only; a failed miner scores 0 and protects no rows. A failed miner whose
    rows were published earlier by another is reported as "copycat"."""
    seen: dict[bytes, int] = {}
    scored: dict[int, MinerScore] = {}
    for o in sorted(outcomes, key=lambda o: (o.commit_block, o.uid)):
        if not o.ok:
            sources = sorted({seen[d] for d in o.row_digests if d in seen})
            if sources:
                detail = (f"rows published earlier by uid {', '.join(map(str, sources))}; "
                          f"the bundle also fails {o.reason}: {o.detail}")
                scored[o.uid] = MinerScore(o.uid, o.hotkey, "copycat", detail, 0, 0, 0.0, verdict=o.reason)
            else:
                scored[o.uid] = MinerScore(o.uid, o.hotkey, o.reason, o.detail, 0, 0, 0.0, verdict=o.reason)
            continue
        unique = [d for d in dict.fromkeys(o.row_digests) if d not in seen]
        copied = len(o.row_digests) - len(unique)
        for d in unique:
            seen[d] = o.uid
        reason, detail = o.reason, o.detail
        if copied and not unique:
            reason, detail = "copycat", f"all {copied} rollouts were published earlier by another miner"
        elif copied:
            detail = f"{copied} rollouts published earlier by another miner count zero"
        scored[o.uid] = MinerScore(o.uid, o.hotkey, reason, detail, len(unique), copied,
                                   float(len(unique)) ** SCORE_EXPONENT, verdict=o.reason)
    result = [scored[u] for u in sorted(scored)]
    weights = normalize_u16([s.score for s in result])
    for s, w in zip(result, weights):
        s.weight = w
    return result


def normalize_u16(scores: list[float]) -> list[int]:
    """Max-scaled u16 weights: the best score maps to U16_MAX, zero to zero, Python round() in
    between (the same quantization as the bittensor SDK's bt.intents.normalize)."""
    if any(s < 0 or s != s for s in scores):
        raise ValueError("scores must be non-negative numbers")
    top = max(scores, default=0.0)
    if top <= 0:
        return [0] * len(scores)
    return [min(U16_MAX, int(round(s / top * U16_MAX))) for s in scores]


def combine_windows(windows: list[list[tuple[int, str, float]]], registered: dict[int, str]) -> tuple[list[int], list[int]]:
    """u16 weights over several windows, for chains whose weight rate limit spans windows: each
    (uid, hotkey)'s window scores summed in window order, kept only while that hotkey still holds
    the uid (a re-registered uid does not inherit its predecessor's scores), then normalize_u16.
    Returns (uids ascending, weights)."""
    totals: dict[int, float] = {}
    for rows in windows:
        for uid, hotkey, score in rows:
            if registered.get(uid) == hotkey:
                totals[uid] = totals.get(uid, 0.0) + score
    uids = sorted(totals)
    return uids, normalize_u16([totals[u] for u in uids])


def verified_root(outcomes: list[MinerOutcome]) -> bytes:
    """Merkle root over PRF("verified", uid, row_digest) of every verified rollout, uid order."""
    leaves = [prf("verified", o.uid, d) for o in sorted(outcomes, key=lambda o: o.uid) for d in o.verified_rows]
    return merkle_root(leaves)
