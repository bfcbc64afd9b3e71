"""Credit theft through unchecked groups (docs/security.md section 3), run through the real miner
and validator on the embedded chain: a thief computes an honest miner's rows itself, puts them in
place of its own last group (the checkpoint fixes how many groups a bundle holds, so it cannot
append them) and commits first. Every group's problem is checked, so the thief is rejected even when
the opening misses the stolen group, and the victim keeps its credit."""

import pytest
from conftest import with_groups
from test_miner_validator import Net, keys  # noqa: F401 - fixtures

from adversary.cheaters import CreditThiefMiner
from miner.service import Miner

GROUPS = 6  # the opening checks 4 of 6: it misses the stolen group in 1 window of 3


@pytest.fixture()
def net(tmp_path, tiny, local_drand, keys):  # noqa: F811
    return Net(tmp_path, with_groups(tiny, GROUPS), local_drand, keys)


def test_credit_thief_is_caught_and_victim_keeps_its_credit(net, keys):  # noqa: F811
    victim, thief, vkey = keys
    unopened_seen = windows = 0
    while windows < 2 or (not unopened_seen and windows < 16):  # P(opening always hits it) = (2/3)^16
        windows += 1
        w = net.next_window()
        t = net.miner(thief, cls=CreditThiefMiner, name="t", victim=victim.ss58_address)
        t.run_window(w)
        Miner(net.chain, victim, net.lm, net.store, net.beacons, net.tmp / "victim").run_window(w)
        v = net.validator(vkey, name=f"v{w}")
        net.open(v, w)
        res = v.process_window(w)
        by = {m["hotkey"]: m for m in res.report["miners"]}
        stolen_index = t.stolen_index  # GROUPS - 1, or None when the victim's problems are all the thief's own
        if stolen_index is None:
            continue
        assert by[thief.ss58_address]["commit_block"] <= by[victim.ss58_address]["commit_block"]
        unopened_seen += stolen_index not in by[thief.ss58_address]["checked_groups"]
        # the thief: rejected for the stolen group's problem, labelled copycat of the victim
        assert by[thief.ss58_address]["verdict"] == "bad_problem"
        assert by[thief.ss58_address]["reason"] == "copycat"
        assert f"uid {by[victim.ss58_address]['uid']}" in by[thief.ss58_address]["detail"]
        assert by[thief.ss58_address]["weight"] == 0 and by[thief.ss58_address]["credited_rollouts"] == 0
        bad = [r for r in by[thief.ss58_address]["rollouts"] if r["reason"] == "bad_problem"]
        assert bad and {r["group"] for r in bad} == {stolen_index}
        # the victim, who committed later, keeps every row
        assert by[victim.ss58_address]["reason"] == "ok"
        assert by[victim.ss58_address]["credited_rollouts"] == GROUPS * net.lm.generation.group_size
        assert by[victim.ss58_address]["weight"] == 65535
    # the case the old rule missed (stolen group not opened) happened at least once
    assert unopened_seen >= 1
