"""Slow windows: the embedded chain's simulated clock survives a wall clock that runs ahead of it
(or behind), the local network survives generation slower than the block time, a miner never
sends a commitment that cannot land in its window, and a slow miner waits for the next window
instead of starting every window late."""

import threading

import pytest
from typer.testing import CliRunner

from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import BLOCK_SECONDS, EVMChain
from adapters.storage import FileStore
from miner.service import Miner
from rollproof.cli import app
from verification.challenge import window_deadline_block, window_of_block, window_start_block
from verification.constants import WINDOW_BLOCKS


@pytest.fixture()
def wall_clock(monkeypatch):
    """py-evm stamps each new pending block max(wall clock, parent + 1) with eth._utils.headers.eth_now;
    this makes that wall clock jump `step` seconds (default one hour) ahead at every reading."""
    import eth._utils.headers as headers

    real = headers.eth_now
    state = {"offset": 0, "step": 3600}

    def now():
        state["offset"] += state["step"]
        return real() + state["offset"]

    monkeypatch.setattr(headers, "eth_now", now)
    return state


def _assert_simulated(chain):
    times = [chain.block(n).timestamp for n in range(chain.current_block() + 1)]
    assert [b - a for a, b in zip(times, times[1:])] == [BLOCK_SECONDS] * (len(times) - 1)
    assert chain.now() == times[-1]


@pytest.mark.parametrize("step", [3600, -10**8])
def test_embedded_clock_ignores_the_wall_clock(wall_clock, keys, step):
    wall_clock["step"] = step  # hours ahead at every reading, or decades behind
    chain = EVMChain.embedded_chain(1)
    chain.mine(2)  # used to raise "Space time continuum distortion" once the wall clock was ahead
    chain.register(keys[0])  # transaction blocks used to be stamped with the wall clock
    w = window_of_block(chain.current_block()) + 1
    chain.mine(window_start_block(w) - chain.current_block())
    chain.commit(keys[0], w, b"x")
    chain.mine(3)
    _assert_simulated(chain)


def test_localnet_survives_generation_slower_than_the_block_time(wall_clock, tiny, tmp_path, monkeypatch):
    from rollproof.localnet import run_localnet

    chains = []
    make = EVMChain.embedded_chain.__func__
    monkeypatch.setattr(EVMChain, "embedded_chain",
                        classmethod(lambda cls, *a, **kw: chains.append(make(cls, *a, **kw)) or chains[-1]))
    result = run_localnet(tiny, tmp_path, windows=2, n_groups=1, train=False)  # the trainer is not under test
    assert result.ok, result.problems
    assert len(result.windows) == 2 and wall_clock["offset"] >= 24 * 3600  # the wall clock ran days ahead
    _assert_simulated(chains[0])


# ---- the miner's timing -------------------------------------------------------------------------

@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//slow-windows/{n}") for n in ("a", "b")]


class SlowMiner(Miner):
    """Generation that takes `blocks` blocks of chain time."""

    def __init__(self, *a, blocks: int = 0, **kw):
        super().__init__(*a, **kw)
        self.blocks = blocks
        self.started: list[int] = []

    def make_bundle(self, ctx, on_tokens=None, should_stop=None):
        self.started.append(ctx.window)
        bundle = super().make_bundle(ctx, on_tokens, should_stop)
        self.chain.mine(self.blocks)
        return bundle


def _setup(tmp_path, tiny, local_drand, keys, auto_mine=False):
    chain = EVMChain.embedded_chain(netuid=1, auto_mine=auto_mine)
    chain.register(keys[0])
    beacons = LocalBeaconSource(local_drand, clock=chain.now)
    store = FileStore(tmp_path / "store")

    def miner(blocks=0, name="m"):
        return SlowMiner(chain, keys[0], tiny, store, beacons, tmp_path / name, blocks=blocks)

    return chain, miner


def _to_block(chain, number):
    assert number >= chain.current_block()
    chain.mine(number - chain.current_block())


def test_no_commitment_is_sent_in_the_windows_last_block(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_deadline_block(w) - 1)  # a commitment sent now lands at the deadline
    m = miner()
    rec = m.run_window(w)
    assert rec.stage == "missed" and "no block left" in rec.detail
    assert m.started == [] and chain.current_block() == window_deadline_block(w) - 1  # nothing generated or sent


def test_generation_ending_in_the_last_block_is_missed_not_left_uploaded(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w))
    m = miner(blocks=WINDOW_BLOCKS - 1)
    rec = m.run_window(w)
    assert rec.stage == "missed" and "finished too late" in rec.detail
    assert m.state.record(w).stage == "missed" and m.state.generation_blocks() == WINDOW_BLOCKS - 1
    assert chain.current_block() == window_deadline_block(w) - 1 and chain.commitment_of(keys[0].ss58_address, w) is None


def test_a_commitment_that_lands_after_the_deadline_marks_the_window_missed(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_deadline_block(w) - 2)  # one block left: the miner sends
    real_commit = chain.commit

    def late_commit(*a, **kw):  # another transaction takes that block first
        chain.mine(1)
        return real_commit(*a, **kw)

    chain.commit = late_commit
    m = miner()
    rec = m.run_window(w)
    assert rec.stage == "missed" and "did not land before the deadline" in rec.detail
    assert m.state.record(w).stage == "missed"


def test_a_restart_closes_a_window_left_uploaded(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w))
    m = miner()
    real_commit = chain.commit

    def crash(*a, **kw):
        raise KeyboardInterrupt

    chain.commit = crash
    with pytest.raises(KeyboardInterrupt):
        m.run_window(w)
    chain.commit = real_commit
    assert m.state.record(w).stage == "uploaded"
    _to_block(chain, window_start_block(w + 1) + 2)
    (rec,) = miner().run(threading.Event(), max_windows=1)  # a new process with the same journal
    assert rec.window == w + 1 and rec.stage == "committed"
    old = m.state.record(w)
    assert old.stage == "missed" and "no block left" in old.detail and m.state.open_windows() == []


def test_generation_stops_once_the_commitment_can_no_longer_land(tmp_path, tiny, local_drand, keys):
    """A generation still running when the window's last block for a commitment passes is stopped
    (not finished and then thrown away), journaled missed, and nothing is signed, stored or
    committed; the next window is mined on time."""
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_deadline_block(w) - 4)  # three blocks left for a commitment to land
    steps = []

    def slow_steps(n):  # every decoding step takes a block of chain time
        steps.append(n)
        chain.mine(1)

    m = miner()
    rec = m.run_window(w, on_tokens=slow_steps)
    assert rec.stage == "missed" and "generation stopped" in rec.detail, rec
    assert len(steps) == 3 < tiny.generation.max_new_tokens  # stopped at the step that used up the last block
    assert m.state.record(w).stage == "missed" and not list((tmp_path / "store").rglob("*.rpb"))
    assert chain.commitment_of(keys[0].ss58_address, w) is None and m.state.generation_blocks() is None
    _to_block(chain, window_start_block(w + 1))
    assert m.run_window(w + 1).stage == "committed"


def test_the_generation_estimate_belongs_to_the_engine_that_was_measured(tmp_path):
    from miner.service import MinerState

    MinerState(tmp_path, "hf").set_generation_blocks(30)
    assert MinerState(tmp_path, "hf").generation_estimate() == 30
    vllm = MinerState(tmp_path, "vllm")
    assert vllm.generation_estimate() is None  # a measurement of another engine is no estimate
    assert vllm.record_skip(7) == 1 and MinerState(tmp_path, "vllm").skipped_windows() == 1
    vllm.set_generation_blocks(4)
    assert MinerState(tmp_path, "vllm").generation_estimate() == 4 and MinerState(tmp_path, "hf").generation_estimate() is None
    (tmp_path / "timing.json").write_text('{"generation_blocks": 12}')  # a journal from before engines were named
    assert MinerState(tmp_path, "hf").generation_estimate() == 12 and MinerState(tmp_path, "vllm").generation_blocks() is None


def test_a_slow_miner_waits_for_the_next_window_instead_of_starting_late(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w) + 10)
    m = miner(blocks=15)  # generation takes 15 of the window's 20 blocks
    assert m.run_window(w).stage == "missed"  # no estimate yet: it starts, and ends 5 blocks into w + 1
    assert m.state.generation_blocks() == 15
    rec = miner(blocks=15).run_window(w + 1)  # a restart remembers the estimate
    assert rec.stage == "skipped" and "waiting for window" in rec.detail and m.state.record(w + 1) is None
    _to_block(chain, window_start_block(w + 2))
    assert m.run_window(w + 2).stage == "committed"
    assert m.started == [w, w + 2]


def test_a_window_start_is_tried_even_after_a_generation_longer_than_a_window(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    m = miner()
    m.state.set_generation_blocks(2 * WINDOW_BLOCKS)  # once very slow: no window could ever fit it
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w) + 1)
    assert m.run_window(w).stage == "skipped"
    _to_block(chain, window_start_block(w + 1))
    assert m.run_window(w + 1).stage == "committed" and m.state.generation_blocks() == 0  # measured again


def test_the_miner_loop_skips_the_late_window_and_commits_on_time(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys, auto_mine=True)  # waiting mines the blocks
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w) + 10)
    m = miner(blocks=15)
    records = m.run(threading.Event(), max_windows=3)
    assert [(r.window, r.stage) for r in records] == [(w, "missed"), (w + 2, "committed"), (w + 3, "committed")]
    assert m.started == [w, w + 2, w + 3]  # window w + 1 (5 blocks late) was never started


def test_the_estimate_halves_with_every_skipped_window_until_the_miner_tries(tmp_path, tiny, local_drand, keys):
    """A miner once measured at two whole windows that reaches every window one block after its
    start (so the first-block rule never applies) skips two windows, not all of them."""
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    m = miner()
    m.state.set_generation_blocks(2 * WINDOW_BLOCKS)
    w = window_of_block(chain.current_block()) + 1
    stages = []
    for k in range(4):
        _to_block(chain, window_start_block(w + k) + 1)  # WINDOW_BLOCKS - 2 blocks left for a commitment
        stages.append(m.run_window(w + k).stage)
        if stages[-1] == "committed":
            break
    # estimates 40, 20 (both >= the 18 blocks left: skipped), then 10 < 18: tried and committed
    assert stages == ["skipped", "skipped", "committed"], stages
    assert m.started == [w + 2] and m.state.generation_blocks() == 0 and m.state.skipped_windows() == 0


def test_a_window_retried_after_its_skip_counts_once(tmp_path, tiny, local_drand, keys):
    chain, miner = _setup(tmp_path, tiny, local_drand, keys)
    m = miner()
    m.state.set_generation_blocks(2 * WINDOW_BLOCKS)
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w) + 1)
    for _ in range(3):  # the loop asks again after an outage inside the same window
        assert m.run_window(w).stage == "skipped"
    assert m.state.skipped_windows() == 1 and m.state.generation_estimate() == WINDOW_BLOCKS
    assert miner().state.generation_estimate() == WINDOW_BLOCKS  # a restart keeps the decayed estimate


def test_the_miner_loop_arriving_late_every_window_tries_again(tmp_path, tiny, local_drand, keys):
    """The real loop on a chain whose waits always return one block after the window's start (a
    poll slower than the block time): without the decay it skipped every window forever."""
    chain, miner = _setup(tmp_path, tiny, local_drand, keys, auto_mine=True)
    m = miner()
    m.state.set_generation_blocks(2 * WINDOW_BLOCKS)
    stop, waits = threading.Event(), []
    real_wait = chain.wait_for_block

    def one_block_late(number, stop_event=None, poll_s=2.0):
        waits.append(number)
        if len(waits) > 6:  # the guard: a miner parked for good ends the test instead of hanging it
            stop.set()
        return real_wait(number + 1, stop_event, poll_s)

    chain.wait_for_block = one_block_late
    w = window_of_block(chain.current_block()) + 1
    _to_block(chain, window_start_block(w) + 1)
    records = m.run(stop, max_windows=1, poll_s=0)
    assert [(r.window, r.stage) for r in records] == [(w + 2, "committed")], (records, waits)
    assert m.started == [w + 2] and len(waits) == 2


# ---- --threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["miner", "run"], ["validator", "run"], ["localnet"], ["verify", __file__]])
def test_threads_out_of_range_is_a_one_line_error(args):
    out = CliRunner().invoke(app, [*args, "--threads", "0", "--model", "tiny"])
    assert out.exit_code == 2, out.output
    assert out.output.strip() == "error: --threads must be at least 1, got 0"


def test_threads_sets_torchs_thread_count():
    import torch

    from rollproof.cli_common import apply_threads

    before = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
        apply_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
