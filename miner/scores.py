"""How validators scored this miner, as the chain holds it: read after each window and journaled
for the status page (rollproof_miner_validator_* metrics, miner/metrics.py).

`read_scores(chain, uid, window)` asks the chain, for every neuron with a validator permit, its
newest ledger entry among windows `window`, `window - 1`, ... (SCORE_LOOKBACK_WINDOWS of them:
validators write a window's entry a little after its deadline, so the newest one is usually one or
two windows back) and the weights it set most recently. That is one `neurons()` read, at most
SCORE_LOOKBACK_WINDOWS `ledger_entry` reads and one `weights` read per validator.

Shares: `score_share` is this miner's score over the sum of the entry's scores, `weight_share`
its u16 weight over the sum of the validator's weights (0 when it is not listed or the sum is 0).

Journal, under the miner's state directory (`ScoreJournal`), written atomically, plain JSON:

* `scores/latest.json`: the last read, what the metrics show::

      {"read_in_window": 42, "uid": 0,
       "validators": [{"validator_uid": 2, "hotkey": "5F...", "scored_window": 41,
                       "score": 812, "scores_total": 1624, "score_share": 0.5,
                       "ledger_block": 1005, "weight": 65535, "weights_total": 131070,
                       "weight_share": 0.5}]}

  `scored_window`, `score`, `scores_total`, `score_share` and `ledger_block` are null when no
  ledger entry of the validator was found in the windows looked at.

* `scores/<w>.json`: every ledger entry read for window w (the window whose bundles it scored: join
  it with `windows/<w>.json`, what this miner committed then), one per validator, kept as history::

      {"window": 41, "uid": 0,
       "validators": {"2": {"hotkey": "5F...", "score": 812, "scores_total": 1624,
                            "score_share": 0.5, "ledger_block": 1005}}}

  A validator's entry is added when first read (a ledger entry is written once per window).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from adapters.chain.base import Chain
from adapters.files import atomic_write

SCORE_LOOKBACK_WINDOWS = 4


@dataclass(frozen=True)
class ValidatorView:
    """What one validator said of this miner."""

    validator_uid: int
    hotkey: str
    scored_window: int | None
    score: int | None
    scores_total: int | None
    score_share: float | None
    ledger_block: int | None
    weight: int
    weights_total: int
    weight_share: float


def _share(part: int, total: int) -> float:
    return part / total if total > 0 else 0.0


def read_scores(chain: Chain, uid: int, window: int,
                lookback: int = SCORE_LOOKBACK_WINDOWS) -> list[ValidatorView]:
    """Every permitted validator's newest ledger entry (windows window .. window - lookback + 1) and
    current weights, as this miner's share. Raises ChainError when the chain cannot be read."""
    views = []
    for neuron in chain.neurons():
        if not neuron.validator_permit:
            continue
        entry = None
        for w in range(window, max(-1, window - lookback), -1):
            entry = chain.ledger_entry(neuron.uid, w)
            if entry is not None:
                break
        weights = chain.weights(neuron.uid)
        weight, weights_total = int(weights.get(uid, 0)), int(sum(weights.values()))
        if entry is None:
            views.append(ValidatorView(neuron.uid, neuron.hotkey, None, None, None, None, None,
                                       weight, weights_total, _share(weight, weights_total)))
            continue
        scores = dict(zip(entry.uids, entry.scores))
        score, total = int(scores.get(uid, 0)), int(sum(entry.scores))
        views.append(ValidatorView(neuron.uid, neuron.hotkey, entry.window, score, total, _share(score, total),
                                   entry.block, weight, weights_total, _share(weight, weights_total)))
    return views


class ScoreJournal:
    """`state_dir/scores/`: the last read and the history of ledger entries (module docstring)."""

    def __init__(self, root: Path):
        self.dir = Path(root) / "scores"

    def latest(self) -> dict | None:
        path = self.dir / "latest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def window(self, window: int) -> dict | None:
        path = self.dir / f"{window}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write(self, read_in_window: int, uid: int, views: list[ValidatorView]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "latest.json", json.dumps(
            {"read_in_window": read_in_window, "uid": uid, "validators": [asdict(v) for v in views]}).encode())
        for v in views:
            if v.scored_window is None:
                continue
            record = self.window(v.scored_window) or {"window": v.scored_window, "uid": uid, "validators": {}}
            key = str(v.validator_uid)
            if key in record["validators"]:
                continue
            record["validators"][key] = {"hotkey": v.hotkey, "score": v.score, "scores_total": v.scores_total,
                                         "score_share": v.score_share, "ledger_block": v.ledger_block}
            atomic_write(self.dir / f"{v.scored_window}.json", json.dumps(record).encode())
