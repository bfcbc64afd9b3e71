"""Every credited window reaches exactly one weight set (issue 24, item 2): the validator is killed
at each stage boundary of a window's chain writes, stays down for more than a window (one window
never runs at all), restarts on the same journal, and the chain's WeightsSet events are checked
against a re-derivation from the journal: the weights the chain got for window W are
combine_windows over the reports of the windows the journal says were counted in W, and every
window whose report credits a miner is counted in exactly one set the chain holds.

The kill is a BaseException raised right after the stage is journaled (or right after the weights
transaction landed, before anything is journaled): nothing of the killed process runs after it,
and the restarted validator is a new object that shares only the journal directory and the chain."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import EVMChain
from adapters.fetch import Fetcher
from adapters.storage import FileStore
from miner.service import Miner
from validator.service import Validator
from validator.stages import JournalError, Stage
from validator.state import ValidatorState, WeightsIntent
from verification.challenge import window_of_block, window_start_block
from verification.scoring import combine_windows

NETUID = 3


class Killed(BaseException):
    """The validator process dies here (not an Exception: no handler of the node catches it)."""


@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//weights-journal/{n}") for n in ("a", "b", "validator")]


class Net:
    def __init__(self, tmp_path, lm, drand, keys):
        self.chain = EVMChain.embedded_chain(NETUID)
        for k in keys:
            self.chain.register(k)
        self.vkey = keys[2]
        self.chain.set_validator_permit(self.chain.uid_of(self.vkey.ss58_address))
        self.beacons = LocalBeaconSource(drand, clock=self.chain.now)
        self.store = FileStore(tmp_path / "store")
        self.lm = lm
        self.tmp = tmp_path
        self.miners = [Miner(self.chain, k, lm, self.store, self.beacons, tmp_path / f"m{i}")
                       for i, k in enumerate(keys[:2])]

    def validator(self, **kw) -> Validator:
        """A validator process: a new object on the same journal directory."""
        return Validator(self.chain, self.vkey, self.lm, self.beacons, Fetcher(file_roots=[self.store.root]),
                         self.tmp / "v", **kw)

    def mine(self, n: int) -> None:
        self.chain.mine(n)

    def to_window(self, w: int) -> None:
        self.mine(window_start_block(w) - self.chain.current_block())

    def close(self, validator: Validator, w: int) -> None:
        while not validator.ready(w):
            self.mine(1)

    def weight_sets(self) -> dict[int, dict[int, int]]:
        """The WeightsSet events of the validator's uid: window -> {uid: weight}. Fails on a second
        set for one window."""
        vuid = self.chain.uid_of(self.vkey.ss58_address)
        out: dict[int, dict[int, int]] = {}
        for ev in self.chain.registry.events.WeightsSet().get_logs(from_block=0):
            if int(ev.args.validator_uid) != vuid:
                continue
            w = int(ev.args.window)
            assert w not in out, f"two weight sets for window {w}"
            out[w] = {int(d): int(v) for d, v in zip(ev.args.dests, ev.args.weights)}
        return out


class ServedNet(Net):
    """The embedded EVM served over HTTP JSON-RPC (tests/rpc_server.py), so a validator in another
    process writes to the same chain; every node connects with its own funded EVM key."""

    def __init__(self, tmp_path, lm, drand, keys):
        from eth_account import Account

        from adapters.chain.evm import EmbeddedEVM
        from rpc_server import EmbeddedRPCServer

        evm = EmbeddedEVM()
        self.registry, self.ledger = EVMChain.deploy(evm.w3, evm.admin, NETUID)
        self.server = EmbeddedRPCServer(evm).start()
        self.evm_keys = {}
        for k in keys:
            acct = Account.create()
            with self.server.lock:
                evm.fund(acct.address)
            self.evm_keys[k.ss58_address] = "0x" + acct.key.hex().removeprefix("0x")
        self.chain = EVMChain.connect(self.server.url, self.registry, self.ledger, evm_keys=self.evm_keys)
        for k in keys:
            self.chain.register(k)
        self.vkey = keys[2]
        vuid = self.chain.uid_of(self.vkey.ss58_address)
        with self.server.lock:  # the admin is eth-tester's unlocked account, in process
            EVMChain(evm.w3, self.registry, self.ledger, embedded=evm).set_validator_permit(vuid)
        self.beacons = LocalBeaconSource(drand, clock=self.server.head_time)
        self.store = FileStore(tmp_path / "store")
        self.lm = lm
        self.tmp = tmp_path
        self.miners = [Miner(self.chain, k, lm, self.store, self.beacons, tmp_path / f"m{i}")
                       for i, k in enumerate(keys[:2])]

    def mine(self, n: int) -> None:
        self.server.mine(n)


def step(validator: Validator, w: int) -> None:
    """One pass of the validator's loop (Validator.run): score the closed window, then the pending
    chain writes of every scored window, oldest first."""
    assert validator.score_window(w) is None
    validator._write_pending([])


def check_every_credited_window_counted_once(net: Net) -> dict[int, list[int]]:
    """The chain's weight sets against a fresh reading of the journal; returns set window -> the
    windows it counted."""
    state = ValidatorState(net.tmp / "v")  # a fresh process's view of the journal
    registered = {n.uid: n.hotkey for n in net.chain.neurons()}
    sets = net.weight_sets()
    counted: dict[int, list[int]] = {}
    for w in state.windows():
        in_w = state.counted_in(w)
        if in_w is not None:
            counted.setdefault(in_w, []).append(w)
    for w in state.windows():
        report = json.loads(state.report_path(w).read_bytes())
        credited = any(m["score"] > 0 for m in report["miners"])
        if credited:
            in_w = state.counted_in(w)
            assert in_w is not None, f"window {w} credits a miner but is journaled {state.stage(w)}"
            assert in_w in sets, f"window {w} is journaled counted in window {in_w}, whose set is not on chain"
    for w, on_chain in sets.items():
        assert state.stage(w) == Stage.COUNTED and state.counted_in(w) == w, \
            f"window {w}'s weights are on chain but it is journaled {state.stage(w)} (counted in {state.counted_in(w)})"
        reports = [json.loads(state.report_path(c).read_bytes()) for c in sorted(counted[w])]
        uids, weights = combine_windows([[(m["uid"], m["hotkey"], m["score"]) for m in r["miners"]] for r in reports],
                                        registered)
        assert on_chain == dict(zip(uids, weights)), (w, counted[w], on_chain)
    # every set counts its own window, so no window's scores are in two sets
    assert all(w in ws for w, ws in counted.items())
    return counted


@pytest.mark.parametrize("kill_after", ["scored", "ledgered", "weights_intent", "weights_tx",
                                        "weights_tx, no weights window", "weights_tx, lands late"])
def test_a_killed_validator_counts_every_credited_window_once(tmp_path, tiny, local_drand, keys, kill_after, caplog):
    """`weights_tx, no weights window`: a chain that does not say which window the last set was for
    (Bittensor: weights_window is None), where the restart compares the weights on chain with the
    journaled intent."""
    caplog.set_level(logging.INFO, logger="rollproof.validator")
    net = Net(tmp_path, tiny, local_drand, keys)
    chain = net.chain
    if kill_after.endswith("no weights window"):
        chain.weights_window = lambda uid: None
        kill_after = "weights_tx"
    lands_late = kill_after.endswith("lands late")  # the killed process's transaction lands after the restart read the chain
    if lands_late:
        kill_after = "weights_tx"
    first = window_of_block(chain.current_block()) + 1
    w1, w3 = first, first + 2  # first + 1 never runs: the validator is down through it
    net.to_window(w1)
    assert net.miners[0].run_window(w1).stage == "committed"
    dying = net.validator()
    net.close(dying, w1)
    if kill_after == "weights_tx":
        real = chain.set_weights
        pending = []

        def land_then_die(*a, **kw):
            if lands_late:  # sent, still in the mempool when the process dies
                pending.append((a, kw))
            else:
                real(*a, **kw)
            raise Killed

        chain.set_weights = land_then_die
    else:
        journal = dying.state.set_stage

        def journal_then_die(window, stage):
            journal(window, stage)
            if stage == kill_after:
                raise Killed

        dying.state.set_stage = journal_then_die
    with pytest.raises(Killed):
        step(dying, w1)
    if kill_after == "weights_tx":
        del chain.set_weights
        assert net.weight_sets().keys() == (set() if lands_late else {w1})  # landed; the journal never heard of it
        assert dying.state.stage(w1) == Stage.WEIGHTS_INTENT
    else:
        assert dying.state.stage(w1) == kill_after and net.weight_sets() == {}

    # down for more than a window: w1 + 1 passes unseen, b commits in w3
    net.to_window(w3)
    assert net.miners[1].run_window(w3).stage == "committed"
    restarted = net.validator(max_catch_up=1)
    net.close(restarted, w3)
    assert restarted.next_window() == w3
    if lands_late:
        # the restart reads the chain (nothing for w1 yet: w1 is deferred), then the old transaction lands
        real_ready = chain.weights_ready

        def late_landing(uid):
            while pending:
                a, kw = pending.pop()
                chain.set_weights(*a, **kw)
            return real_ready(uid)

        chain.weights_ready = late_landing
    step(restarted, w3)
    if lands_late:
        assert any(f"window {w1}: its weight set (windows {w1}) landed after it was deferred" in r.getMessage()
                   for r in caplog.records)

    counted = check_every_credited_window_counted_once(net)
    a, b = (chain.uid_of(k.ss58_address) for k in keys[:2])
    if kill_after == "weights_tx":
        # the set sent before the kill is recognised, never sent again, w1 never deferred
        assert counted == {w1: [w1], w3: [w3]}
        assert net.weight_sets()[w3] == {b: 65535}
        assert lands_late or any(f"window {w1}: its weight set (windows {w1}) is on chain" in r.getMessage()
                                 for r in caplog.records)
    else:
        # w1's scores reach w3's set across the window that never ran
        assert counted == {w3: [w1, w3]}
        assert net.weight_sets() == {w3: {a: 65535, b: 65535}}
    assert restarted.state.stage(w1 + 1) is None


def test_a_validator_sigkilled_after_its_weights_landed_never_sends_them_again(tmp_path, tiny, local_drand, keys):
    """The same as the weights_tx case above with a real SIGKILL of a validator process writing over
    HTTP JSON-RPC: the transaction landed, the process died before journaling it, and the restarted
    validator (down for more than a window, one window never run) counts the set once."""
    net = ServedNet(tmp_path, tiny, local_drand, keys)
    try:
        first = window_of_block(net.chain.current_block()) + 1
        w1, w3 = first, first + 2
        net.to_window(w1)
        assert net.miners[0].run_window(w1).stage == "committed"
        scorer = net.validator()
        net.close(scorer, w1)
        assert scorer.score_window(w1) is None  # scored in this process; the writes in the one killed
        script = str(Path(__file__).resolve().parent / "sigkill_validator.py")
        proc = subprocess.run([sys.executable, script, net.server.url, net.registry, net.ledger,
                               net.evm_keys[net.vkey.ss58_address], str(tmp_path / "v")],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[-1] == "weights sent"
        state = ValidatorState(tmp_path / "v")
        assert state.stage(w1) == Stage.WEIGHTS_INTENT and net.weight_sets().keys() == {w1}

        net.to_window(w3)
        assert net.miners[1].run_window(w3).stage == "committed"
        restarted = net.validator(max_catch_up=1)
        net.close(restarted, w3)
        step(restarted, w3)
        b = net.chain.uid_of(keys[1].ss58_address)
        assert check_every_credited_window_counted_once(net) == {w1: [w1], w3: [w3]}
        assert net.weight_sets()[w3] == {b: 65535}
    finally:
        net.server.close()


def test_deferred_windows_past_the_cap_are_dropped_with_a_line_each(tmp_path, tiny, local_drand, keys, caplog):
    """Deferred windows beyond max_combined - 1 before a set are journaled dropped and logged one
    line each; the kept ones are counted in the set, over a window that never ran."""
    caplog.set_level(logging.INFO, logger="rollproof.validator")
    net = Net(tmp_path, tiny, local_drand, keys)
    validator = net.validator(max_combined=2)
    state = validator.state
    miner = {"uid": 0, "hotkey": keys[0].ss58_address, "score": 7, "weight": 65535}
    for w in (1, 2, 4):  # window 3 never ran
        state.save_report(w, json.dumps({"miners": [miner]}).encode())
        for stage in ("scored", "ledgered", "deferred"):
            state.set_stage(w, stage)
    intent = validator._plan(5, {"miners": [miner | {"uid": 1, "hotkey": keys[1].ss58_address, "score": 0,
                                                        "weight": 0}]})
    assert intent == WeightsIntent(5, (4, 5), (0, 1), (65535, 0))  # windows 1-2 are past the cap
    assert [state.stage(w) for w in (1, 2, 4)] == ["dropped", "dropped", "deferred"]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2 and dropped[0].startswith("window 1 dropped") and dropped[1].startswith("window 2 dropped")


def test_the_journal_refuses_an_illegal_stage_change_and_reads_old_journals(tmp_path):
    state = ValidatorState(tmp_path / "v")
    with pytest.raises(JournalError, match="stage none cannot become counted"):
        state.set_stage(1, Stage.COUNTED)
    state.set_stage(1, Stage.SCORED)
    with pytest.raises(JournalError, match="stage scored cannot become weights_intent"):
        state.set_stage(1, Stage.WEIGHTS_INTENT)
    state.set_stage(1, Stage.SCORED)  # a resumed step journaling the same stage again
    # journals written before the state machine
    for w, old in ((2, "weights_set"), (3, "weights_skipped")):
        (tmp_path / "v" / "windows" / str(w)).mkdir(parents=True)
        (tmp_path / "v" / "windows" / str(w) / "stage").write_text(old)
    assert state.stage(2) == Stage.COUNTED and state.counted_in(2) == 2
    assert state.stage(3) == Stage.DEFERRED and state.deferred_before(4) == [3]
    assert state.deferred_before(3) == []  # the scan back stops at the counted window 2
    (tmp_path / "v" / "windows" / "4").mkdir()
    (tmp_path / "v" / "windows" / "4" / "stage").write_text("weights_exploded")
    with pytest.raises(JournalError, match="unknown stage 'weights_exploded'"):
        state.stage(4)


def test_the_stage_machine_has_no_dead_ends():
    """Every stage is reachable from a fresh window, every non-terminal stage can still end (counted,
    dropped or checkpoint_failed), and terminal stages have no way out."""
    from validator.stages import TERMINAL, TRANSITIONS

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reachable(None) == set(Stage)
    for stage in Stage:
        assert (TRANSITIONS[stage] == frozenset()) == (stage in TERMINAL)
        assert stage in TERMINAL or reachable(stage) & TERMINAL, stage
    # a window whose scores credit a miner can only end counted or dropped (logged), never silently
    assert reachable(Stage.SCORED) & TERMINAL == {Stage.COUNTED, Stage.DROPPED}


@given(st.text(max_size=60))
def test_a_stage_file_parses_or_is_one_journal_error(text):
    from validator.stages import LEGACY_STAGES, parse_stage

    try:
        stage = parse_stage(text, "windows/1/stage")
    except JournalError as exc:
        assert "\n" not in str(exc)  # one line, whatever the file holds
        assert text.strip() not in {s.value for s in Stage} | set(LEGACY_STAGES)
    else:
        assert stage in set(Stage) and (stage.value == text.strip() or LEGACY_STAGES[text.strip()] == stage)


@given(st.lists(st.sampled_from(list(Stage)), max_size=8))
def test_random_stage_changes_apply_only_along_the_machine(tmp_path_factory, changes):
    from validator.stages import TRANSITIONS

    state = ValidatorState(tmp_path_factory.mktemp("v"))
    current = None
    for new in changes:
        if new == current or new in TRANSITIONS[current]:
            state.set_stage(7, new)
            current = new
        else:
            with pytest.raises(JournalError):
                state.set_stage(7, new)
        assert state.stage(7) == current
