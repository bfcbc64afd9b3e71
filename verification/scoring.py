"""Window scoring: per-miner outcomes -> scores -> copycat labels -> u16 weights, and the
Merkle root over verified rollouts that the score ledger records. Pure: the validator and an
offline auditor compute the same numbers from the same bundles and beacons."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from verification.constants import SCORE_SCALE, U16_MAX
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
    # completion_digest of every row the Verifier rejected as bad_problem: rows that answer no
    # problem of this miner (what a copier's look like)
    foreign_rows: list[bytes] = field(default_factory=list)


@dataclass
class MinerScore:
    uid: int
    hotkey: str
    reason: str  # final reason: the verdict's, or "copycat"
    detail: str
    credited_rollouts: int  # rows of an accepted bundle: every one answers the miner's own problem
    score: int  # window_score(credited_rollouts)
    weight: int = 0
    verdict: str = "ok"  # what verification alone said (an offline audit reproduces this)


def score_window(outcomes: list[MinerOutcome]) -> list[MinerScore]:
    """Scores in uid order. An accepted bundle's every row is credited to its miner (the Verifier
    checked every group's problem, so each row answers one of that miner's own problems and no row
    can be another miner's); a failed miner scores 0. A failed miner whose bad_problem rows equal rows
    of an accepted bundle in the window is reported as "copycat" naming their uids, whatever the
    commit order: the owner of a problem keeps its credit even when a copier commits first."""
    owners: dict[bytes, set[int]] = {}
    for o in outcomes:
        if o.ok:
            for d in o.row_digests:
                owners.setdefault(d, set()).add(o.uid)
    scored: list[MinerScore] = []
    for o in sorted(outcomes, key=lambda o: o.uid):
        if o.ok:
            n = len(o.row_digests)
            scored.append(MinerScore(o.uid, o.hotkey, o.reason, o.detail, n, window_score(n)))
            continue
        sources = sorted({u for d in o.foreign_rows for u in owners.get(d, ()) if u != o.uid})
        if sources:
            detail = (f"holds rows of uid {', '.join(map(str, sources))}'s problems; "
                      f"the bundle fails {o.reason}: {o.detail}")
            scored.append(MinerScore(o.uid, o.hotkey, "copycat", detail, 0, 0, verdict=o.reason))
        else:
            scored.append(MinerScore(o.uid, o.hotkey, o.reason, o.detail, 0, 0, verdict=o.reason))
    weights = normalize_u16([s.score for s in scored])
    for s, w in zip(scored, weights):
        s.weight = w
    return scored


def window_score(credited_rollouts: int) -> int:
    """floor(SCORE_SCALE * n ** 1.5) in exact integer arithmetic: isqrt(n**3 * SCORE_SCALE**2)."""
    if credited_rollouts < 0:
        raise ValueError("credited rollouts must be non-negative")
    return math.isqrt(credited_rollouts ** 3 * SCORE_SCALE ** 2)


def normalize_u16(scores: list[int]) -> list[int]:
    """Max-scaled u16 weights in exact integer arithmetic: the best score maps to U16_MAX, zero to
    zero, and s to floor((2 * s * U16_MAX + top) / (2 * top)), i.e. s * U16_MAX / top rounded half
    up. Scores are integers (a float is accepted only when it holds an integer value, as JSON
    readers may give)."""
    exact = []
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s != s or s < 0:
            raise ValueError(f"scores must be non-negative integers, got {s!r}")
        if isinstance(s, float):
            if not s.is_integer():
                raise ValueError(f"scores must be integers, got {s!r}")
            s = int(s)
        exact.append(s)
    top = max(exact, default=0)
    if top <= 0:
        return [0] * len(exact)
    return [(2 * s * U16_MAX + top) // (2 * top) for s in exact]


def combine_windows(windows: list[list[tuple[int, str, int]]], registered: dict[int, str]) -> tuple[list[int], list[int]]:
    """u16 weights over several windows, for chains whose weight rate limit spans windows: each
    (uid, hotkey)'s window scores summed in window order, kept only while that hotkey still holds
    the uid (a re-registered uid does not inherit its predecessor's scores), then normalize_u16.
    Returns (uids ascending, weights)."""
    totals: dict[int, int] = {}
    for rows in windows:
        for uid, hotkey, score in rows:
            if registered.get(uid) == hotkey:
                totals[uid] = totals.get(uid, 0) + score
    uids = sorted(totals)
    return uids, normalize_u16([totals[u] for u in uids])


def verified_root(outcomes: list[MinerOutcome]) -> bytes:
    """Merkle root over PRF("verified", uid, row_digest) of every verified rollout, uid order."""
    leaves = [prf("verified", o.uid, d) for o in sorted(outcomes, key=lambda o: o.uid) for d in o.verified_rows]
    return merkle_root(leaves)
