"""`rollproof verify --trace`: the intermediate values an auditor diffs against its own
implementation, re-derived by the protocol's functions and consistent with the verdict."""

import json
import subprocess
import sys

from adversary.lib import edit_logprob, resigned
from verification.bundle import encode_bundle
from verification.challenge import problem_round, problem_seed, window_seed
from verification.constants import LOGPROB_ABS_TOL, SKETCH_TOL
from verification.drand import verify_beacon


def _trace(tmp_path, bundle, *args):
    path = tmp_path / "b.rpb"
    path.write_bytes(encode_bundle(bundle))
    res = subprocess.run([sys.executable, "-m", "rollproof.cli", "verify", str(path), "--model", "tiny", "--trace",
                          *args], capture_output=True, text=True, timeout=300)
    return res.returncode, json.loads(res.stdout)


def test_trace_of_an_base_bundle(tmp_path, base_bundle, local_drand):
    code, out = _trace(tmp_path, base_bundle)
    assert code == 0 and out["verdict"]["ok"]
    t, h = out["trace"], base_bundle.header
    randomness = verify_beacon(local_drand.info, h.beacon.to_beacon(),
                               expected_round=problem_round(local_drand.info, h.block_time))
    ws = window_seed(h.netuid, h.window, bytes.fromhex(h.block_hash), randomness)
    assert t["window_seed"] == ws.hex() and t["pinned_round"] == h.beacon.round
    assert t["checked_groups"] == out["verdict"]["checked_groups"] == [g.index for g in base_bundle.groups]
    for g, tg in zip(base_bundle.groups, t["groups"]):
        assert tg["problem_seed"] == problem_seed(ws, h.hotkey, g.index).hex()
        assert tg["prompt_tokens"] == tg["bundle_prompt_tokens"] == g.prompt.tolist()
        assert [r["rollout"] for r in tg["rollouts"]] == [r.index for r in g.rollouts]
        for r, tr in zip(g.rollouts, tg["rollouts"]):
            assert [p["token"] for p in tr["positions"]] == r.completion.tolist()
            assert all(p["sketch_distance"] <= SKETCH_TOL and p["logprob_error"] <= LOGPROB_ABS_TOL
                       and p["sampling_gap"] <= 1e-3 for p in tr["positions"])


def test_trace_shows_where_a_rejected_rollout_fails(tmp_path, base_bundle, ctx, alice):
    bad = resigned(base_bundle, ctx, alice, edit_logprob)  # rollout 0 of group 0, position 3, +0.05
    code, out = _trace(tmp_path, bad)
    assert code == 1 and out["verdict"]["reason"] == "logprob_mismatch"
    positions = out["trace"]["groups"][0]["rollouts"][0]["positions"]
    over = [i for i, p in enumerate(positions) if p["logprob_error"] > LOGPROB_ABS_TOL]
    assert over == [3] and abs(positions[3]["logprob_error"] - 0.05) < 1e-3
