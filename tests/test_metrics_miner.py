"""The miner's Prometheus metrics, scraped as Prometheus would (the text exposition, parsed by
prometheus-client's own parser) from a real Miner mining the tiny model on the embedded chain:
outcomes counted once per window, generation and proof timing, uploads, commit latency, outages,
and what validators said of the miner (metrics and the scores journal)."""

import json
import logging
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.beacons import LocalBeaconSource
from adapters.chain.evm import EVMChain
from adapters.fetch import Fetcher
from adapters.outage import Backoff
from adapters.storage import FileStore
from miner.engine import generate
from miner.engines import HFEngine
from miner.proof import rollout_requests
from miner.service import Miner
from miner.timing import GenerationTiming
from validator.service import Validator
from verification.challenge import window_of_block, window_start_block
from verification.constants import PROTOCOL_VERSION
from verification.errors import ChainError, StorageError
from verification.sketch import sketch_vectors


def scrape(registry) -> dict:
    """{(sample name, sorted labels): value} from the registry's text exposition."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//metrics/{n}") for n in ("miner", "validator")]


class Net:
    """The embedded chain (mined by hand), a file store, local drand, a miner and a validator."""

    def __init__(self, tmp_path, lm, drand, keys, store_cls=FileStore):
        self.chain = EVMChain.embedded_chain(3)
        self.beacons = LocalBeaconSource(drand, clock=self.chain.now)
        self.store = store_cls(tmp_path / "store")
        self.tmp, self.lm, self.keys = tmp_path, lm, keys
        self.uid = self.chain.register(keys[0])
        self.vuid = self.chain.register(keys[1])
        self.chain.set_validator_permit(self.vuid)
        self.registry = CollectorRegistry()

    def miner(self, **kw):
        return Miner(self.chain, self.keys[0], self.lm, self.store, self.beacons, self.tmp / "m",
                     registry=self.registry, **kw)

    def validator(self):
        return Validator(self.chain, self.keys[1], self.lm, self.beacons, Fetcher(file_roots=[self.store.root]),
                         self.tmp / "v")

    def next_window(self) -> int:
        w = window_of_block(self.chain.current_block()) + 1
        self.chain.mine(window_start_block(w) - self.chain.current_block())
        return w

    def close(self, validator, window):
        while not validator.ready(window):
            self.chain.mine(1)
        return validator.process_window(window)


@pytest.fixture()
def net(tmp_path, tiny, local_drand, keys):
    return Net(tmp_path, tiny, local_drand, keys)


def test_windows_generation_uploads_and_validator_scores_move(net):
    miner, validator = net.miner(), net.validator()
    uid = str(net.uid)
    m = dict(uid=uid)
    committed, windows = [], []
    for _ in range(3):
        w = net.next_window()
        windows.append(w)
        assert miner.run_window(w).stage == "committed"
        samples = scrape(net.registry)
        committed.append(value(samples, "rollproof_miner_windows_total", uid=uid, outcome="committed"))
        assert value(samples, "rollproof_window", role="miner") == w
        net.close(validator, w)
    assert committed == [1, 2, 3]  # one per window, as each lands
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="missed") is None

    tokens = value(s, "rollproof_miner_tokens_total", **m)
    journal = [miner.state.record(w) for w in windows]
    assert tokens == sum(r.n_tokens for r in journal) > 0
    assert value(s, "rollproof_miner_tokens_per_second", **m) > 0
    assert value(s, "rollproof_miner_generation_seconds_count", **m) == 3
    assert value(s, "rollproof_miner_generation_seconds_sum", **m) > 0
    fraction = value(s, "rollproof_miner_generation_window_fraction", **m)
    assert fraction == json.loads((miner.state.root / "timing.json").read_text())["generation_blocks"] / 20
    decode, proof = value(s, "rollproof_miner_decode_seconds_total", **m), value(s, "rollproof_miner_proof_seconds_total", **m)
    assert 0 < proof < decode
    assert 0 < value(s, "rollproof_miner_proof_share", **m) < 1
    assert value(s, "rollproof_miner_generation_seconds_sum", **m) >= decode  # decoding is part of generating
    assert value(s, "rollproof_miner_commit_latency_seconds_count", **m) == 3
    assert value(s, "rollproof_miner_store_writes_total", uid=uid, result="ok") == 3
    assert value(s, "rollproof_miner_store_writes_total", uid=uid, result="failed") is None
    assert value(s, "rollproof_miner_bundle_bytes", **m) == miner.state.bundle_path(windows[-1]).stat().st_size
    assert value(s, "rollproof_build_info", role="miner", version="0.1.0", protocol=str(PROTOCOL_VERSION)) == 1
    assert value(s, "rollproof_checkpoint_version", role="miner") == 0
    assert value(s, "rollproof_chain_block", role="miner") > 0
    for dep in ("chain", "chain_writes", "store", "beacon"):
        assert value(s, "rollproof_dependency_up", role="miner", dependency=dep) == 1

    # after its third window the miner read the validator's entry of the second (the third was
    # scored after): the only miner gets the whole score and weight
    v = dict(uid=uid, validator_uid=str(net.vuid))
    assert value(s, "rollproof_miner_validator_scored_window", **v) == windows[1]
    assert value(s, "rollproof_miner_validator_score", **v) == 1.0
    assert value(s, "rollproof_miner_validator_weight", **v) == 1.0
    latest = miner.scores.latest()
    assert latest["read_in_window"] == windows[2] and latest["uid"] == net.uid
    (view,) = latest["validators"]
    entry = net.chain.ledger_entry(net.vuid, windows[1])
    assert view == {"validator_uid": net.vuid, "hotkey": net.keys[1].ss58_address, "scored_window": windows[1],
                    "score": entry.scores[entry.uids.index(net.uid)], "scores_total": sum(entry.scores),
                    "score_share": 1.0, "ledger_block": entry.block, "weight": 65535, "weights_total": 65535,
                    "weight_share": 1.0}
    first = net.chain.ledger_entry(net.vuid, windows[0])
    assert miner.scores.window(windows[0]) == {"window": windows[0], "uid": net.uid, "validators": {str(net.vuid): {
        "hotkey": net.keys[1].ss58_address, "score": first.scores[first.uids.index(net.uid)],
        "scores_total": sum(first.scores), "score_share": 1.0, "ledger_block": first.block}}}
    assert miner.scores.window(windows[2]) is None  # not read yet: scored after the miner's last read

    # a second call (and a restarted miner on the same journal) finds the window done: not counted
    # again; the restarted miner reads the scores again and finds the third window's entry
    assert miner.run_window(windows[-1]).stage == "committed"
    assert net.miner().run_window(windows[-1]).stage == "committed"
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="committed") == 3
    assert value(s, "rollproof_miner_store_writes_total", uid=uid, result="ok") == 3
    assert value(s, "rollproof_miner_validator_scored_window", **v) == windows[2]


def test_a_validator_sharing_scores_gives_this_miner_its_share(tmp_path, tiny, local_drand, keys):
    from bittensor.sp_core import Keypair

    other = Keypair.create_from_uri("//metrics/other")
    net = Net(tmp_path, tiny, local_drand, keys)
    other_uid = net.chain.register(other)
    miner = net.miner()
    peer = Miner(net.chain, other, tiny, net.store, net.beacons, tmp_path / "peer")
    validator = net.validator()
    w = net.next_window()
    miner.run_window(w)
    peer.run_window(w)
    res = net.close(validator, w)
    views = miner.observe_scores(w + 1)
    scores = {s["uid"]: s["score"] for s in res.report["miners"]}
    weights = net.chain.weights(net.vuid)
    (view,) = views
    assert view.scored_window == w and view.score_share == pytest.approx(scores[net.uid] / sum(scores.values()))
    assert view.weight_share == pytest.approx(weights.get(net.uid, 0) / sum(weights.values()))
    assert 0 < view.score_share < 1 and other_uid in scores
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_validator_score", uid=str(net.uid), validator_uid=str(net.vuid)) == pytest.approx(
        view.score_share)
    assert miner.observe_scores(w + 1) is None  # once per window


def test_missed_and_skipped_windows_are_counted_once(net):
    miner = net.miner()
    uid = str(net.uid)
    w = net.next_window()
    net.chain.mine(25)  # past the deadline
    assert miner.run_window(w).stage == "missed"
    assert miner.run_window(w).stage == "missed"
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="missed") == 1

    # a generation measured at two windows: a late start is skipped (also after the estimate's
    # halving, the rule of MinerState.generation_estimate), once per window, also across a restart
    # on the same journal
    miner.state.set_generation_blocks(40)
    w = net.next_window()
    net.chain.mine(3)
    assert miner.run_window(w).stage == "skipped"
    assert net.miner().run_window(w).stage == "skipped"
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="skipped") == 1
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="committed") is None


def test_a_resumed_bundle_moves_the_resumed_counter_and_commits_once(net):
    miner = net.miner()
    uid = str(net.uid)
    w = net.next_window()
    real = net.chain.commit

    def crash(*a, **kw):
        raise KeyboardInterrupt  # a process killed after the upload

    net.chain.commit = crash
    with pytest.raises(KeyboardInterrupt):
        miner.run_window(w)
    net.chain.commit = real
    restarted = net.miner()
    assert restarted.run_window(w).stage == "committed"
    s = scrape(net.registry)
    assert value(s, "rollproof_miner_resumed_windows_total", uid=uid) == 1
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="committed") == 1
    assert value(s, "rollproof_miner_store_writes_total", uid=uid, result="ok") == 1  # uploaded once


def test_a_store_outage_moves_failed_writes_and_the_store_dependency(tmp_path, tiny, local_drand, keys):
    seen_up = []

    class FlakyStore(FileStore):
        failures = 3
        registry = None

        def put(self, key, data):
            if self.registry is not None:
                seen_up.append(value(scrape(self.registry), "rollproof_dependency_up", role="miner", dependency="store"))
            if self.failures:
                self.failures -= 1
                raise StorageError("bucket briefly unreachable")
            return super().put(key, data)

    chain = EVMChain.embedded_chain(3, auto_mine=True)
    uid = chain.register(keys[0])
    registry = CollectorRegistry()
    store = FlakyStore(tmp_path / "store")
    store.registry = registry
    miner = Miner(chain, keys[0], tiny, store, LocalBeaconSource(local_drand, clock=chain.now), tmp_path / "m",
                  registry=registry, backoff=Backoff(0.01, 0.05))
    (rec,) = miner.run(threading.Event(), max_windows=1, poll_s=0.01)
    assert rec.stage == "committed"
    # up before the first attempt, down through the failed ones, up again after the upload
    assert seen_up[0] == 1 and seen_up[1:4] == [0, 0, 0]
    s = scrape(registry)
    store_dep = dict(role="miner", dependency="store")
    assert value(s, "rollproof_dependency_up", **store_dep) == 1
    assert value(s, "rollproof_dependency_failures_total", **store_dep) == 3
    assert value(s, "rollproof_dependency_outages_total", **store_dep) == 1
    assert value(s, "rollproof_dependency_outage_seconds_total", **store_dep) > 0
    assert value(s, "rollproof_miner_store_writes_total", uid=str(uid), result="failed") == 3
    assert value(s, "rollproof_miner_store_writes_total", uid=str(uid), result="ok") == 1
    assert value(s, "rollproof_miner_windows_total", uid=str(uid), outcome="committed") == 1


def test_a_chain_error_reading_scores_never_fails_the_window(net, caplog):
    miner = net.miner()
    uid = str(net.uid)
    real = net.chain.ledger_entry

    def down(*a, **kw):
        raise ChainError("ledger read timed out")

    net.chain.ledger_entry = down
    w = net.next_window()
    with caplog.at_level(logging.WARNING, logger="rollproof.miner"):
        assert miner.run_window(w).stage == "committed"
        assert miner.observe_scores(w + 1) is None
    assert [r.getMessage() for r in caplog.records].count("chain unreachable: ledger read timed out; retrying") == 1
    s = scrape(net.registry)
    chain_dep = dict(role="miner", dependency="chain")
    assert value(s, "rollproof_dependency_up", **chain_dep) == 0
    assert value(s, "rollproof_dependency_failures_total", **chain_dep) == 2
    assert value(s, "rollproof_miner_windows_total", uid=uid, outcome="committed") == 1
    assert miner.scores.latest() is None

    net.chain.ledger_entry = real
    assert miner.observe_scores(w + 2) is not None
    s = scrape(net.registry)
    assert value(s, "rollproof_dependency_up", **chain_dep) == 1
    assert value(s, "rollproof_dependency_outages_total", **chain_dep) == 1


def test_the_hf_engines_timing_changes_nothing_it_generates(tiny, ctx, alice):
    requests = rollout_requests(tiny, ctx, alice.ss58_address, [0, 1])[:4]
    vectors = sketch_vectors(ctx.sketch_key, tiny.hidden_size)
    timing = GenerationTiming()
    timed = generate(tiny, requests, vectors, batch_size=4, max_new_tokens=8, timing=timing)
    plain = generate(tiny, requests, vectors, batch_size=4, max_new_tokens=8)
    for a, b in zip(timed, plain, strict=True):
        assert a.completion == b.completion
        assert np.array_equal(a.logprobs, b.logprobs) and np.array_equal(a.sketches, b.sketches)
    assert timing.tokens == sum(len(r.completion) for r in timed)
    assert 0 < timing.proof_s < timing.decode_s and 0 < timing.proof_share < 1

    engine = HFEngine(4)
    engine.generate(tiny, requests[:2], ctx.sketch_key, max_new_tokens=4)
    first = engine.timing.copy()
    engine.generate(tiny, requests[:2], ctx.sketch_key, max_new_tokens=4)
    spent = engine.timing.since(first)
    assert spent.tokens == first.tokens > 0 and spent.decode_s > 0
