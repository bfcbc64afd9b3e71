"""Miner and validator services on the embedded chain: commitments, resume without double
publishing, verdicts, weights and ledger on chain, crash-safe validator restarts."""

import pytest
from net_env import Net

from miner.service import Miner
from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import EVMChain
from adversary.cheaters import EditedTokensMiner
from adapters.fetch import Fetcher
from adapters.storage import FileStore
from validator.service import Validator
from verification.bundle import bundle_hash, decode_bundle
from verification.challenge import window_of_block, window_start_block
from verification.commitment import decode_commitment, encode_commitment
from verification.verifier import Expectation, Verifier


@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//test-net/{n}") for n in ("honest", "editor", "validator")]


@pytest.fixture()
def net(tmp_path, tiny, local_drand, keys):
    return Net(tmp_path, tiny, local_drand, keys)


def test_miner_commits_a_bundle_the_offline_verifier_accepts(net, keys, local_drand):
    miner = net.miner(keys[0])
    w = net.next_window()
    rec = miner.run_window(w)
    assert rec.stage == "committed"
    on_chain = net.chain.commitment_of(keys[0].ss58_address, w)
    c = decode_commitment(on_chain.data)
    data = Fetcher(file_roots=[net.store.root]).fetch(c.location)
    assert c.window == w and bundle_hash(data) == c.bundle_hash
    start = net.chain.block(window_start_block(w))
    verdict = Verifier(net.lm, [local_drand.info]).verify(
        decode_bundle(data), Expectation(netuid=3, window=w, hotkey=keys[0].ss58_address,
                                         block_hash=start.hash, block_time=start.timestamp))
    assert verdict.ok, verdict.detail


def test_restart_mid_window_reuses_the_bundle_and_commits_once(net, keys):
    miner = net.miner(keys[0])
    w = net.next_window()
    calls = []
    original = miner.chain.commit
    # crash right after upload: the commit raises once, as a killed process would never reach it
    def crash(*a, **kw):
        calls.append(1)
        raise KeyboardInterrupt

    miner.chain.commit = crash
    with pytest.raises(KeyboardInterrupt):
        miner.run_window(w)
    del miner.chain.commit
    assert miner.state.record(w).stage == "uploaded"
    built = miner.state.bundle_path(w).read_bytes()

    restarted = net.miner(keys[0])  # a new process with the same journal
    rec = restarted.run_window(w)
    assert rec.stage == "committed" and rec.bundle_hash == bundle_hash(built).hex()
    assert decode_commitment(net.chain.commitment_of(keys[0].ss58_address, w).data).bundle_hash == bundle_hash(built)
    n_blocks = net.chain.current_block()
    assert net.miner(keys[0]).run_window(w).stage == "committed"  # nothing more is sent
    assert net.chain.current_block() == n_blocks
    assert original is not None and calls == [1]


def test_commitment_already_on_chain_is_not_sent_again(net, keys, tmp_path):
    miner = net.miner(keys[0], name="fresh-journal")
    w = net.next_window()
    net.chain.commit(keys[0], w, encode_commitment(w, b"\x00" * 32, "file:///elsewhere"))
    rec = miner.run_window(w)
    assert rec.stage == "committed" and "found on chain" in rec.detail


def test_a_miner_past_the_deadline_does_not_commit(net, keys):
    miner = net.miner(keys[0])
    w = net.next_window()
    net.chain.mine(25)
    assert miner.run_window(w).stage == "missed"
    assert net.chain.commitment_of(keys[0].ss58_address, w) is None


def test_validator_scores_writes_chain_and_survives_restart(net, keys):
    honest, editor, vkey = keys
    w = net.next_window()
    net.miner(honest, name="h").run_window(w)
    net.miner(editor, cls=EditedTokensMiner, name="e").run_window(w)
    v = net.validator(vkey)
    assert not v.ready(w)
    net.open(v, w)

    verified = []
    real = v.verify_commitments
    v.verify_commitments = lambda *a, **kw: verified.extend(r.uid for r in a[1]) or real(*a, **kw)
    res = v.process_window(w)
    by = {m["hotkey"]: m for m in res.report["miners"]}
    assert by[honest.ss58_address]["reason"] == "ok" and by[honest.ss58_address]["weight"] == 65535
    assert by[editor.ss58_address]["weight"] == 0
    assert by[editor.ss58_address]["reason"] in ("sketch_mismatch", "sampling_mismatch")
    assert res.wrote_ledger and res.wrote_weights
    vuid = net.chain.uid_of(vkey.ss58_address)
    assert net.chain.weights(vuid) == {m["uid"]: m["weight"] for m in res.report["miners"]}
    assert net.chain.ledger_entry(vuid, w).report_hash == res.report_hash
    assert sorted(verified) == sorted(m["uid"] for m in res.report["miners"])

    # a restart finds the window finished: no re-verification, nothing written twice
    again = net.validator(vkey)
    again.verify_commitments = lambda *a, **kw: pytest.fail("re-verified after restart")
    res2 = again.process_window(w)
    assert res2.report_hash == res.report_hash and not res2.wrote_ledger and not res2.wrote_weights


def test_validator_crash_after_scoring_resumes_without_rescoring(net, keys):
    honest, _, vkey = keys
    w = net.next_window()
    net.miner(honest, name="h").run_window(w)
    v = net.validator(vkey)
    net.open(v, w)
    real_record = net.chain.record_scores
    net.chain.record_scores = lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        v.process_window(w)
    net.chain.record_scores = real_record
    assert v.state.stage(w) == "scored"
    again = net.validator(vkey)
    again.verify_commitments = lambda *a, **kw: pytest.fail("re-verified after restart")
    res = again.process_window(w)
    assert res.wrote_ledger and res.wrote_weights


def test_validator_reasons_before_verification(net, keys, tmp_path):
    honest, editor, vkey = keys
    w = net.next_window()
    # honest commits a hash that does not match the stored file; editor commits garbage
    loc = net.store.put("x.rpb", b"not the committed bytes")
    net.chain.commit(honest, w, encode_commitment(w, b"\x01" * 32, loc))
    net.chain.commit(editor, w, b"garbage")
    v = net.validator(vkey)
    net.open(v, w)
    res = v.process_window(w)
    by = {m["hotkey"]: m for m in res.report["miners"]}
    assert by[honest.ss58_address]["reason"] == "hash_mismatch"
    assert by[editor.ss58_address]["reason"] == "bad_commitment"
    assert not res.wrote_weights  # all zero: weights are left as they were


def test_miner_loop_retries_a_transient_storage_failure(tmp_path, tiny, local_drand, keys):
    import threading

    from verification.errors import StorageError

    class FlakyStore(FileStore):
        failures = 1

        def put(self, key, data):
            if self.failures:
                self.failures -= 1
                raise StorageError("bucket briefly unreachable")
            return super().put(key, data)

    chain = EVMChain.embedded_chain(3, auto_mine=True)
    chain.register(keys[0])
    store = FlakyStore(tmp_path / "store")
    miner = Miner(chain, keys[0], tiny, store, LocalBeaconSource(local_drand, clock=chain.now), tmp_path / "m")
    (rec,) = miner.run(threading.Event(), max_windows=1)
    assert rec.stage == "committed" and store.failures == 0
    assert chain.commitment_of(keys[0].ss58_address, rec.window) is not None


def test_validator_loop_finishes_a_window_on_a_self_mining_chain(tmp_path, tiny, local_drand, keys):
    import threading

    chain = EVMChain.embedded_chain(3, auto_mine=True)
    for k in keys:
        chain.register(k)
    chain.set_validator_permit(chain.uid_of(keys[2].ss58_address))
    beacons = LocalBeaconSource(local_drand, clock=chain.now)
    store = FileStore(tmp_path / "store")
    w = window_of_block(chain.current_block())
    Miner(chain, keys[0], tiny, store, beacons, tmp_path / "m").run_window(w)
    v = Validator(chain, keys[2], tiny, beacons, Fetcher(file_roots=[store.root]), tmp_path / "v")
    (res,) = v.run(threading.Event(), max_windows=1, poll_s=0.01)
    assert res.window == w and res.wrote_weights
    assert chain.weights(chain.uid_of(keys[2].ss58_address)) == {chain.uid_of(keys[0].ss58_address): 65535}


@pytest.mark.parametrize("max_combined", [None, 2])
def test_windows_under_a_weight_rate_limit_count_in_the_next_set(net, keys, max_combined):
    """Subtensor refuses weights until WeightsSetRateLimit blocks passed since the last set; windows
    closed meanwhile are skipped and their scores are summed into the next set, at most
    `max_combined` windows (the default cap is far above the three here; with 2, window 1 drops)."""
    from verification.constants import WINDOW_BLOCKS

    chain = net.chain
    # the rule subtensor applies: each window is processed a few blocks after the next one started,
    # so a limit of 2.5 windows lets the first window set weights and skips the next two
    limit = 5 * WINDOW_BLOCKS // 2
    last_set: dict[str, int] = {}
    real_set_weights = chain.set_weights

    def set_weights(keypair, window, uids, weights):
        assert chain.weights_ready(0), "set while the rate limit holds"
        real_set_weights(keypair, window, uids, weights)
        last_set["block"] = chain.current_block()

    chain.set_weights = set_weights
    chain.weights_ready = lambda uid: "block" not in last_set or chain.current_block() - last_set["block"] >= limit
    first, second = net.miner(keys[0], name="a"), net.miner(keys[1], name="b")
    validator = net.validator(keys[2], **({} if max_combined is None else {"max_combined": max_combined}))
    results = []
    start = net.next_window()
    for i in range(4):
        w = start + i  # consecutive windows, as the validator's loop processes them
        assert window_of_block(chain.current_block()) == w
        # window 0: both; window 1: only the first; windows 2-3: only the second
        for miner in ([first, second] if i == 0 else [first] if i == 1 else [second]):
            assert miner.run_window(w).stage == "committed"
        net.open(validator, w)
        results.append(validator.process_window(w))
    assert [r.wrote_weights for r in results] == [True, False, False, True]
    # every window is journaled counted, each in the set that holds its scores (window 1 past the cap: dropped)
    counted = [validator.state.counted_in(r.window) for r in results]
    assert counted == ([start, None, start + 3, start + 3] if max_combined == 2 else [start, start + 3, start + 3, start + 3])
    assert validator.state.stage(start + 1) == ("dropped" if max_combined == 2 else "counted")
    # the last set covers windows 1-3: the first miner scored in window 1, the second in 2 and 3
    def score(result, uid):
        return next(m["score"] for m in result.report["miners"] if m["uid"] == uid)

    first_total, second_total = score(results[1], 0), score(results[2], 1) + score(results[3], 1)
    assert first_total > 0 and second_total > 0
    if max_combined == 2:  # windows 2-3 only: the first miner's window 1 counts in no set
        assert chain.weights(chain.uid_of(keys[2].ss58_address)) == {1: 65535}
        return
    top = max(first_total, second_total)
    assert chain.weights(chain.uid_of(keys[2].ss58_address)) == {
        0: round(first_total / top * 65535), 1: round(second_total / top * 65535)}
    # the latest window alone would have given the first miner nothing
    assert [m["uid"] for m in results[3].report["miners"]] == [1]


def test_miner_keeps_only_the_newest_bundles(tmp_path, tiny, local_drand, keys):
    import threading

    chain = EVMChain.embedded_chain(3, auto_mine=True)
    chain.register(keys[0])
    miner = Miner(chain, keys[0], tiny, FileStore(tmp_path / "store"), LocalBeaconSource(local_drand, clock=chain.now),
                  tmp_path / "m", keep_bundles=1)
    first, second = miner.run(threading.Event(), max_windows=2)
    assert second.window == first.window + 1
    assert not miner.state.bundle_path(first.window).exists() and miner.state.bundle_path(second.window).is_file()
    assert miner.state.record(first.window).stage == "committed"  # the journal stays
    assert len(list((tmp_path / "store").rglob("*.rpb"))) == 2  # the published copies are the store's to keep


def test_validator_prunes_bundles_of_finished_windows_only(tmp_path):
    from validator.state import ValidatorState

    state = ValidatorState(tmp_path / "v")
    for w, stages in ((1, ("scored", "ledgered", "deferred", "counted")), (2, ("scored", "ledgered", "deferred")),
                      (3, ("scored",))):
        state.bundle_path(w, 0).parent.mkdir(parents=True)
        state.bundle_path(w, 0).write_bytes(b"bundle")
        state.save_report(w, b"{}")
        for stage in stages:
            state.set_stage(w, stage)
    assert state.prune_bundles(2) == 1
    assert not state.bundle_path(1, 0).exists() and state.bundle_path(2, 0).exists()
    assert state.prune_bundles(10) == 1  # window 3 is not finished: its bundle stays
    assert state.bundle_path(3, 0).exists() and state.report_path(1).is_file()


def test_validator_catches_up_at_most_a_few_windows_after_an_outage(net, keys):
    from validator.service import MAX_CATCH_UP_WINDOWS

    validator = net.validator(keys[2])
    start = net.next_window()
    assert validator.next_window() == start - 1  # empty journal: the last closed window
    validator.state.set_stage(start - 1, "checkpoint_failed")
    net.chain.mine(window_start_block(start + 1) - net.chain.current_block())
    assert validator.next_window() == start  # one window behind: resume in order
    net.chain.mine(window_start_block(start + 10) - net.chain.current_block())
    last_closed = start + 9
    assert validator.next_window() == last_closed - MAX_CATCH_UP_WINDOWS + 1
